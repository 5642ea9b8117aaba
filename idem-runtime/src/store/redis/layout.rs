//! The persisted key layout of the Redis store (format 1): which Redis keys hold a record, its
//! attempts log, its stream journal and the attempt floor, and the checks on a configured prefix.
//!
//! Every key of one idem key shares one hash tag, `{gggg}`: the first four hex digits of the idem
//! key. So a key's record, log, journal and its group's attempt floor live in one Redis Cluster
//! slot, and each script touches one slot; the 65,536 groups spread the keys over every slot's
//! node. The floor is per group (not one store-wide key, which would live in a single slot that
//! every script would need): the highest attempt number of any record of the group that was
//! deleted or given an expiry, so a key recreated after its record expired, was forgotten or
//! purged always starts above every attempt it had.
//!
//! | Redis key | type | holds |
//! |---|---|---|
//! | `<prefix>format` | string | the format version, `1` |
//! | `<prefix>avoided` | hash | the cost ledger: `a["op","unit"]` amount avoided by replays, `n["op","unit"]` replays |
//! | `<prefix>{gggg}:<key hex>` | hash | the record (fields in [`fields`], plus `sa`: the attempt the journal holds, and `w`: a claim was told `running`) |
//! | `<prefix>{gggg}:<key hex>:log` | list | the attempts log, oldest first, one JSON object a line |
//! | `<prefix>{gggg}:<key hex>:chunks` | list | the stream journal of attempt `sa`: `<offset_ms>:<bytes>` |
//! | `<prefix>{gggg}:floor` | string | the group's attempt floor |
//! | `<prefix>changes` | pub/sub channel | key hex of every forget and release, and of completions and appends someone waits for |

use crate::error::Error;
use crate::key::Key;

/// The format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// The default key prefix.
pub(super) const DEFAULT_PREFIX: &str = "idem:";

/// How many lines the attempts log of one key keeps (the oldest go first).
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
