//! Idempotency keys: the versioned, domain-separated encoding of an operation and its key parts.
//!
//! # Encoding, version 1
//!
//! A key is the 32-byte blake3 `derive_key` hash, under the context string
//! [`KEY_CONTEXT`], of this transcript:
//!
//! | field | encoding |
//! |---|---|
//! | operation name | `u64` LE byte length, then the UTF-8 bytes |
//! | operation version | `u32` LE |
//! | each key part, in order | the part's [`IdemKey`] encoding (below) |
//!
//! Parts are not counted or separated: each part's type fixes where it ends, so the parts
//! `a`, `b` and the one tuple part `(a, b)` give the same key.
//!
//! Part encodings: integers are fixed-width little-endian (`usize`/`isize` widen to 64 bits);
//! `bool` is one byte `0`/`1`; `char` is its `u32` scalar value; strings and byte strings are a
//! `u64` LE length then the bytes; `Option` is tag `0`, or tag `1` then the value; sequences and
//! ordered sets are a `u64` LE length then each element; ordered maps are a `u64` LE length then
//! each key and value; tuples and arrays concatenate their elements (their arity is fixed by the
//! type); derived structs write their fields in order; derived enums write the variant's tag
//! (its name, or the string of `#[idem(tag = "...")]` on it) encoded as a string is, then the
//! variant's fields. A tag, unlike a position, does not change when variants are inserted or
//! reordered, and `tag` lets a renamed variant keep its keys.
//!
//! A payload fingerprint (`verify = (...)`) uses the same transcript under
//! [`FINGERPRINT_CONTEXT`], so a key and a fingerprint of equal inputs never coincide.
//!
//! A step keyed by its parent (`key = parent`) has the key [`position_key`]: the parent's key
//! and the step's position, under [`POSITION_CONTEXT`]; its fingerprint is the transcript above
//! (operation, version, then any `verify` parts) under [`FINGERPRINT_CONTEXT`].
//!
//! Changing any of this changes every key, which re-runs every recorded side effect: the golden
//! vectors in `tests/` pin it.

mod impls;

use std::fmt;

/// blake3 `derive_key` context of keys, format version 1.
pub const KEY_CONTEXT: &str = "idem 2026-11 idempotency key v1";
/// blake3 `derive_key` context of payload fingerprints, format version 1.
pub const FINGERPRINT_CONTEXT: &str = "idem 2026-11 payload fingerprint v1";
/// blake3 `derive_key` context of keys derived from a parent call and a position (`key =
/// parent`), format version 1.
pub const POSITION_CONTEXT: &str = "idem 2026-11 position key v1";

/// The key of the step at `position` (counted from 0) of the call keyed `parent`: the blake3
/// `derive_key` hash, under [`POSITION_CONTEXT`], of the parent's 32 key bytes then the position
/// as `u32` little-endian. The operation is not part of it, so a changed pipeline whose step
/// `n` is now another operation meets the recorded one and is told it diverged (the operation
/// is in the fingerprint instead).
pub fn position_key(parent: &Key, position: u32) -> Key {
    let mut hasher = blake3::Hasher::new_derive_key(POSITION_CONTEXT);
    hasher.update(&parent.0);
    hasher.update(&position.to_le_bytes());
    Key(*hasher.finalize().as_bytes())
}

/// A value that can be part of an idempotency key: it has one canonical byte encoding that
/// never depends on the platform, the compiler, or the process.
///
/// Implemented for std integers, `bool`, `char`, strings, byte strings, `Option`, tuples,
/// arrays, `Vec`/slices, `BTreeMap`/`BTreeSet`, references to keyable types, and (behind
/// features) `uuid::Uuid` and `chrono`/`time` dates. Floats, `HashMap`/`HashSet`, `&mut T` and
/// client handles are deliberately left out: they have no stable encoding.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of an idempotency key",
    label = "this is not keyable (`IdemKey` is not implemented for `{Self}`)",
    note = "key parts need one stable byte encoding: integers, strings, bytes, bool, char, Option, tuples, Vec, BTreeMap/BTreeSet, Uuid, dates, or a type with `#[derive(IdemKey)]`",
    note = "floats: key on an integer (cents, basis points) or `f64::to_bits()`; HashMap/HashSet: use BTreeMap/BTreeSet; pools, clients and `&mut` handles: leave them out of `key = (...)`"
)]
pub trait IdemKey {
    /// Writes this value's canonical encoding.
    fn write_key(&self, out: &mut KeyWriter);

    /// Writes the elements of a slice (after its length prefix). Override only to write many
    /// elements at once with the same bytes (as `u8` does); the default writes each in turn.
    fn write_key_slice(items: &[Self], out: &mut KeyWriter)
    where
        Self: Sized,
    {
        for item in items {
            item.write_key(out);
        }
    }
}

/// Receives a key transcript; hashes it as it goes, and optionally keeps the bytes.
#[derive(Clone)]
pub struct KeyWriter {
    hasher: blake3::Hasher,
    transcript: Option<Vec<u8>>,
}

impl fmt::Debug for KeyWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyWriter")
            .field("recording", &self.transcript.is_some())
            .finish_non_exhaustive()
    }
}

impl KeyWriter {
    fn with_context(context: &str) -> Self {
        Self {
            hasher: blake3::Hasher::new_derive_key(context),
            transcript: None,
        }
    }

    /// Writes raw bytes, with no length prefix. Implementations of [`IdemKey`] for
    /// variable-length data must prefix a length themselves (see [`KeyWriter::write_len`]).
    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        if let Some(t) = &mut self.transcript {
            t.extend_from_slice(bytes);
        }
    }

    /// Writes a length or element count as `u64` little-endian.
    pub fn write_len(&mut self, len: usize) {
        self.write_raw(&(len as u64).to_le_bytes());
    }

    /// Writes a length-prefixed byte string.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        self.write_len(bytes.len());
        self.write_raw(bytes);
    }

    /// Writes an enum variant index (`u32` LE). `#[derive(IdemKey)]` no longer uses it (it
    /// writes the variant's name); it stays for hand-written impls that keep keys recorded when
    /// the derive wrote the index.
    pub fn write_variant(&mut self, index: u32) {
        self.write_raw(&index.to_le_bytes());
    }
}

/// Builds a [`Key`] (and optionally a [`Fingerprint`]) from an operation and its key parts.
#[derive(Debug, Clone)]
pub struct KeyBuilder {
    writer: KeyWriter,
}

impl KeyBuilder {
    /// Starts the key of version `version` of operation `op`.
    pub fn new(op: &str, version: u32) -> Self {
        Self::start(KEY_CONTEXT, op, version, false)
    }

    /// Starts the payload fingerprint of version `version` of operation `op`.
    pub fn fingerprint(op: &str, version: u32) -> Self {
        Self::start(FINGERPRINT_CONTEXT, op, version, false)
    }

    /// Like [`KeyBuilder::new`], but keeps the transcript bytes, so
    /// [`KeyBuilder::finish_with_transcript`] can return them (for tests and debugging).
    pub fn recording(op: &str, version: u32) -> Self {
        Self::start(KEY_CONTEXT, op, version, true)
    }

    fn start(context: &str, op: &str, version: u32, record: bool) -> Self {
        let mut writer = KeyWriter::with_context(context);
        if record {
            writer.transcript = Some(Vec::new());
        }
        writer.write_bytes(op.as_bytes());
        writer.write_raw(&version.to_le_bytes());
        Self { writer }
    }

    /// Appends one key part.
    pub fn part<T: IdemKey + ?Sized>(&mut self, part: &T) -> &mut Self {
        part.write_key(&mut self.writer);
        self
    }

    /// Finishes the hash.
    pub fn finish(self) -> [u8; 32] {
        self.finish_with_transcript().0
    }

    /// Finishes the hash and returns the transcript, if [`KeyBuilder::recording`] was called.
    pub fn finish_with_transcript(self) -> ([u8; 32], Option<Vec<u8>>) {
        (
            *self.writer.hasher.finalize().as_bytes(),
            self.writer.transcript,
        )
    }
}

/// An idempotency key: 32 bytes, shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub [u8; 32]);

/// A payload fingerprint (of the `verify = (...)` arguments): 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

macro_rules! hex_bytes {
    ($t:ident) => {
        impl $t {
            /// The 64-digit lowercase hex form (the form stores persist).
            pub fn to_hex(&self) -> String {
                let mut s = String::with_capacity(64);
                for b in self.0 {
                    s.push(char::from(HEX[usize::from(b >> 4)]));
                    s.push(char::from(HEX[usize::from(b & 0xf)]));
                }
                s
            }

            /// Parses the 64-digit hex form.
            pub fn from_hex(s: &str) -> Option<Self> {
                let bytes = s.as_bytes();
                if bytes.len() != 64 {
                    return None;
                }
                let mut out = [0u8; 32];
                for (i, pair) in bytes.chunks_exact(2).enumerate() {
                    out[i] = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
                }
                Some(Self(out))
            }

            /// The first 12 hex digits, enough to tell keys apart in logs.
            pub fn short(&self) -> ShortHex<'_> {
                ShortHex(&self.0)
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($t), self.to_hex())
            }
        }
    };
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

hex_bytes!(Key);
hex_bytes!(Fingerprint);

/// The first 6 bytes of a key as hex, for log lines and spans.
#[derive(Clone, Copy)]
pub struct ShortHex<'a>(&'a [u8; 32]);

impl fmt::Display for ShortHex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ShortHex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
