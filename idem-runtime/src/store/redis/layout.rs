//! The persisted key layout of the Redis store (format 2): which Redis keys hold a record, its
//! attempts log, its stream journal and its group's attempt counter, and the checks on a
//! configured prefix.
//!
//! Every key of one idem key shares one hash tag, `{gggg}`: the first four hex digits of the idem
//! key. So a key's record, log, journal and its group's counter live in one Redis Cluster slot,
//! and each script touches one slot; the 65,536 groups spread the keys over every slot's node.
//! The counter (`floor`) is per group (not one store-wide key, which would live in a single slot
//! that every script would need): every attempt number of the group is taken from it (`INCR`),
//! so a key recreated after its record expired, was forgotten or purged always starts above
//! every attempt it had.
//!
//! | Redis key | type | holds |
//! |---|---|---|
//! | `<prefix>format` | string | the format version, `2` |
//! | `<prefix>avoided` | hash | the cost ledger: `a["op","unit"]` amount avoided by replays, `n["op","unit"]` replays |
//! | `<prefix>{gggg}:<key hex>` | hash | the record and its current attempt (fields in [`fields`], plus `sa`: the attempt the journal holds, `w`: a claim was told `running`, `h`: the key has an attempts log) |
//! | `<prefix>{gggg}:<key hex>:log` | list | the past attempts (taken over, retried after a failure), oldest first, one JSON object a line; only keys with more than one attempt have it |
//! | `<prefix>{gggg}:<key hex>:chunks` | list | the stream journal of attempt `sa`: `<offset_ms>:<bytes>` |
//! | `<prefix>{gggg}:floor` | string | the group's attempt counter |
//! | `<prefix>changes` | pub/sub channel | key hex of every forget and release, and of completions and appends someone waits for |
//!
//! The current attempt lives in the record (`attempt`, `worker`, `as`: its start, `ao`: its
//! outcome once it ended, at `updated`; its error is `err`, its cost `cost`), as the SQL stores
//! keep it in the record's row: the claim of a new key writes one hash, and its completion
//! rewrites fields of that hash, without touching a list. A claim of an existing record moves
//! the attempt it held to the log.
//!
//! Format 1 kept every attempt, the current one included, in the log, and raised the group's
//! floor on completion instead of numbering from it. Opening a format-1 store with this build
//! marks it format 2; its records still work: a record without `as` is a format-1 record, whose
//! scripts end its attempt's line in the log and raise the floor as format 1 did, until its next
//! claim writes it in format 2.

use crate::error::Error;
use crate::key::Key;

/// The format version this build writes.
pub const FORMAT_VERSION: u32 = 2;

/// The older format this build reads, and upgrades to [`FORMAT_VERSION`] when it opens it.
pub(super) const UPGRADABLE_FORMAT: u32 = 1;

/// The default key prefix.
pub(super) const DEFAULT_PREFIX: &str = "idem:";

/// How many attempts the history of one key keeps (the oldest go first): the record's current
/// one and up to `LOG_CAP - 1` past ones in the log.
pub(super) const LOG_CAP: u32 = 100;

/// The record hash's fields.
pub(super) mod fields {
    pub(in crate::store::redis) const OP: &str = "op";
    pub(in crate::store::redis) const STATUS: &str = "status";
    pub(in crate::store::redis) const ATTEMPT: &str = "attempt";
    pub(in crate::store::redis) const FINGERPRINT: &str = "fp";
    pub(in crate::store::redis) const SNAPSHOT: &str = "snap";
    pub(in crate::store::redis) const KIND: &str = "kind";
    pub(in crate::store::redis) const ERROR: &str = "err";
    pub(in crate::store::redis) const LEASE: &str = "lease";
    pub(in crate::store::redis) const WORKER: &str = "worker";
    pub(in crate::store::redis) const CREATED: &str = "created";
    pub(in crate::store::redis) const UPDATED: &str = "updated";
    pub(in crate::store::redis) const EXPIRES: &str = "expires";
    pub(in crate::store::redis) const PARENT: &str = "parent";
    pub(in crate::store::redis) const POSITION: &str = "pos";
    pub(in crate::store::redis) const COST: &str = "cost";
    /// When the current attempt started (format 2; a record without it is format 1).
    pub(in crate::store::redis) const ATTEMPT_STARTED: &str = "as";
    /// How the current attempt ended (format 2), once it ended.
    pub(in crate::store::redis) const ATTEMPT_OUTCOME: &str = "ao";
}

/// The Redis keys of one store (one prefix).
#[derive(Debug, Clone)]
pub(super) struct Layout {
    prefix: String,
}

/// The Redis keys of one idem key.
#[derive(Debug, Clone)]
pub(super) struct KeyNames {
    pub(super) record: String,
    pub(super) log: String,
    pub(super) chunks: String,
    pub(super) floor: String,
}

impl Layout {
    /// Checks `prefix`: 1 to 64 bytes of ASCII letters, digits and `_ - : . /`. Braces would
    /// change the hash tag, and spaces or glob characters would break `SCAN` patterns.
    pub(super) fn new(prefix: &str) -> Result<Self, Error> {
        let ok = !prefix.is_empty()
            && prefix.len() <= 64
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-:./".contains(&b));
        if !ok {
            return Err(Error::Config(format!(
                "Redis key prefix {prefix:?}: use 1 to 64 ASCII letters, digits or `_ - : . /` \
                 (no braces, spaces or glob characters)"
            )));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(super) fn format_key(&self) -> String {
        format!("{}format", self.prefix)
    }

    /// The cost ledger: a hash of `a[op, unit]` (amount avoided) and `n[op, unit]` (replays).
    pub(super) fn avoided_key(&self) -> String {
        format!("{}avoided", self.prefix)
    }

    pub(super) fn channel(&self) -> String {
        format!("{}changes", self.prefix)
    }

    pub(super) fn key(&self, key: &Key) -> KeyNames {
        let hex = key.to_hex();
        let group = hex.get(..4).unwrap_or_default();
        let record = format!("{}{{{group}}}:{hex}", self.prefix);
        KeyNames {
            log: format!("{record}:log"),
            chunks: format!("{record}:chunks"),
            floor: format!("{}{{{group}}}:floor", self.prefix),
            record,
        }
    }

    /// The `SCAN MATCH` pattern of record hashes (with `TYPE hash`, which leaves out logs,
    /// journals and floors).
    pub(super) fn record_pattern(&self) -> String {
        format!("{}{{*}}:*", self.prefix)
    }

    /// The idem key a scanned record hash name holds, if it is one.
    pub(super) fn key_of(&self, name: &[u8]) -> Option<Key> {
        let rest = name.strip_prefix(self.prefix.as_bytes())?;
        // `{gggg}:` then 64 hex digits.
        let hex = rest.get(7..)?;
        if hex.len() != 64 {
            return None;
        }
        Key::from_hex(std::str::from_utf8(hex).ok()?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn one_keys_names_share_its_hash_tag() {
        let layout = Layout::new("app:idem:").unwrap();
        let key = Key([0xab; 32]);
        let n = layout.key(&key);
        assert!(n.record.starts_with("app:idem:{abab}:abab"));
        assert_eq!(n.log, format!("{}:log", n.record));
        assert_eq!(n.floor, "app:idem:{abab}:floor");
        assert_eq!(layout.key_of(n.record.as_bytes()), Some(key));
        assert_eq!(layout.key_of(n.log.as_bytes()), None);
        assert_eq!(layout.key_of(n.floor.as_bytes()), None);
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for bad in ["", "a{b}", "a b", "a*", "a?", "x\n", &"p".repeat(65)] {
            assert!(matches!(Layout::new(bad), Err(Error::Config(_))), "{bad:?}");
        }
        for good in ["idem:", "a", "svc/idem-v1.", "A_b-c:"] {
            assert!(Layout::new(good).is_ok(), "{good:?}");
        }
    }
}
