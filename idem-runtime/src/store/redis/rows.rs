//! Reading the Redis store's values back: record hashes, attempts histories (the log's lines
//! and the record's current attempt), journal entries and script replies, each checked against
//! the format (`layout.rs`); anything else is [`Error::Corrupt`] naming the operation and key.

use std::collections::HashMap;

use redis::Value;
use serde::Deserialize;

use super::layout::fields as f;
use crate::error::Error;
use crate::key::{Fingerprint, Key};
use crate::record::{AttemptLog, AttemptOutcome, Costs, Millis, Record, SnapshotKind, Status};
use crate::store::{ParentLink, StoredChunk};

/// The fields `list` reads (everything but the snapshot).
pub(super) const LISTED: [&str; 14] = [
    f::OP,
    f::STATUS,
    f::ATTEMPT,
    f::FINGERPRINT,
    f::KIND,
    f::ERROR,
    f::LEASE,
    f::WORKER,
    f::CREATED,
    f::UPDATED,
    f::EXPIRES,
    f::PARENT,
    f::POSITION,
    f::COST,
];

/// The record's fields that describe its current attempt (format 2), in the order
/// [`attempts`] reads them.
pub(super) const CURRENT_ATTEMPT: [&str; 9] = [
    f::ATTEMPT,
    f::WORKER,
    f::ATTEMPT_STARTED,
    f::UPDATED,
    f::STATUS,
    f::KIND,
    f::ERROR,
    f::COST,
    f::ATTEMPT_OUTCOME,
];

/// A record hash's fields, by name.
pub(super) type Fields = HashMap<String, Vec<u8>>;

/// The fields of an `HMGET` of [`LISTED`].
pub(super) fn listed_fields(values: Vec<Option<Vec<u8>>>) -> Fields {
    LISTED
        .iter()
        .zip(values)
        .filter_map(|(name, v)| v.map(|v| ((*name).to_owned(), v)))
        .collect()
}

fn corrupt(op: &str, key: &Key, reason: String) -> Error {
    Error::Corrupt {
        op: op.to_owned(),
        key: *key,
        reason,
    }
}

fn text(fields: &Fields, name: &str) -> Option<String> {
    fields
        .get(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn number(op: &str, key: &Key, fields: &Fields, name: &str) -> Result<Option<i64>, Error> {
    match fields.get(name) {
        None => Ok(None),
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .map(Some)
            .ok_or_else(|| corrupt(op, key, format!("field `{name}` is not an integer"))),
    }
}

/// A record from its hash (`HGETALL`, or `HMGET` of [`LISTED`] for listings).
pub(super) fn record(key: &Key, fields: &Fields) -> Result<Record, Error> {
    let op = text(fields, f::OP).unwrap_or_default();
    let status = text(fields, f::STATUS)
        .ok_or_else(|| corrupt(&op, key, "no status".into()))?
        .parse::<Status>()
        .map_err(|e| corrupt(&op, key, e))?;
    let attempt = number(&op, key, fields, f::ATTEMPT)?
        .and_then(|a| u64::try_from(a).ok())
        .ok_or_else(|| corrupt(&op, key, "no attempt number".into()))?;
    let fingerprint = match text(fields, f::FINGERPRINT) {
        None => None,
        Some(hex) => Some(
            Fingerprint::from_hex(&hex)
                .ok_or_else(|| corrupt(&op, key, "fingerprint is not 64 hex digits".into()))?,
        ),
    };
    let snapshot_kind = match text(fields, f::KIND) {
        None => None,
        Some(k) => Some(
            SnapshotKind::parse(&k)
                .ok_or_else(|| corrupt(&op, key, format!("unknown snapshot kind `{k}`")))?,
        ),
    };
    let created_at = number(&op, key, fields, f::CREATED)?.unwrap_or_default();
    let parent = match text(fields, f::PARENT) {
        None => None,
        Some(hex) => Some(ParentLink {
            key: Key::from_hex(&hex)
                .ok_or_else(|| corrupt(&op, key, "parent is not 64 hex digits".into()))?,
            position: number(&op, key, fields, f::POSITION)?
                .and_then(|p| u32::try_from(p).ok())
                .ok_or_else(|| corrupt(&op, key, "parent without a position".into()))?,
        }),
    };
    let cost = match text(fields, f::COST) {
        None => None,
        Some(json) => Some(Costs::from_json(&json).map_err(|e| corrupt(&op, key, e))?),
    };
    Ok(Record {
        parent,
        cost,
        key: *key,
        status,
        attempt,
        fingerprint,
        snapshot: fields.get(f::SNAPSHOT).cloned(),
        snapshot_kind,
        error: text(fields, f::ERROR),
        // A finished record keeps its last lease field (rewritten by the next claim).
        lease_until: match status {
            Status::Running => number(&op, key, fields, f::LEASE)?,
            Status::Completed | Status::Failed => None,
        },
        worker: text(fields, f::WORKER),
        created_at,
        updated_at: number(&op, key, fields, f::UPDATED)?.unwrap_or(created_at),
        expires_at: number(&op, key, fields, f::EXPIRES)?,
        op,
    })
}

/// One attempts-log line as the scripts write it (`cjson`).
#[derive(Deserialize)]
struct Line {
    a: u64,
    w: String,
    s: Millis,
    #[serde(default)]
    e: Option<Millis>,
    o: String,
    #[serde(default)]
    x: Option<String>,
    /// The attempt's cost JSON, as text.
    #[serde(default)]
    c: Option<String>,
}

/// A key's attempts, oldest first: the log's lines (past attempts; every attempt of a format-1
/// record), then the record's current attempt from its [`CURRENT_ATTEMPT`] fields (a format-2
/// record: one with `as`).
pub(super) fn attempts(
    key: &Key,
    lines: &[Vec<u8>],
    current: &[Option<Vec<u8>>],
) -> Result<Vec<AttemptLog>, Error> {
    let mut out = lines
        .iter()
        .map(|bytes| {
            let line: Line = serde_json::from_slice(bytes)
                .map_err(|e| corrupt("", key, format!("attempts-log line: {e}")))?;
            let outcome = AttemptOutcome::parse(&line.o)
                .ok_or_else(|| corrupt("", key, format!("unknown attempt outcome `{}`", line.o)))?;
            let cost = match &line.c {
                None => None,
                Some(json) => Some(Costs::from_json(json).map_err(|e| corrupt("", key, e))?),
            };
            Ok(AttemptLog {
                cost,
                attempt: line.a,
                worker: line.w,
                started_at: line.s,
                ended_at: line.e,
                outcome,
                error: line.x,
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let fields: Fields = CURRENT_ATTEMPT
        .iter()
        .zip(current)
        .filter_map(|(name, v)| v.clone().map(|v| ((*name).to_owned(), v)))
        .collect();
    if let Some(line) = current_attempt(key, &fields)? {
        out.push(line);
    }
    Ok(out)
}

/// The attempt a format-2 record holds (`None` for a format-1 record, or no record).
fn current_attempt(key: &Key, fields: &Fields) -> Result<Option<AttemptLog>, Error> {
    let op = "";
    let Some(started_at) = number(op, key, fields, f::ATTEMPT_STARTED)? else {
        return Ok(None);
    };
    let attempt = number(op, key, fields, f::ATTEMPT)?
        .and_then(|a| u64::try_from(a).ok())
        .ok_or_else(|| corrupt(op, key, "no attempt number".into()))?;
    let status = text(fields, f::STATUS)
        .ok_or_else(|| corrupt(op, key, "no status".into()))?
        .parse::<Status>()
        .map_err(|e| corrupt(op, key, e))?;
    let outcome = match text(fields, f::ATTEMPT_OUTCOME) {
        Some(o) => AttemptOutcome::parse(&o)
            .ok_or_else(|| corrupt(op, key, format!("unknown attempt outcome `{o}`")))?,
        // Finished by a format-1 build (a rolling upgrade): the status tells.
        None => match (status, text(fields, f::KIND).as_deref()) {
            (Status::Running, _) => AttemptOutcome::Running,
            (Status::Completed, Some("ok")) => AttemptOutcome::Completed,
            (Status::Completed | Status::Failed, _) => AttemptOutcome::Failed,
        },
    };
    let cost = match text(fields, f::COST) {
        None => None,
        Some(json) => Some(Costs::from_json(&json).map_err(|e| corrupt(op, key, e))?),
    };
    let finished = status != Status::Running;
    Ok(Some(AttemptLog {
        cost: cost.filter(|_| finished),
        attempt,
        worker: text(fields, f::WORKER).unwrap_or_default(),
        started_at,
        ended_at: if finished {
            number(op, key, fields, f::UPDATED)?
        } else {
            None
        },
        outcome,
        error: if status == Status::Failed {
            text(fields, f::ERROR)
        } else {
            None
        },
    }))
}

/// A journal entry: `<offset_ms>:<bytes>`.
pub(super) fn encode_chunk(chunk: &StoredChunk) -> Vec<u8> {
    let mut out = format!("{}:", chunk.offset_ms).into_bytes();
    out.extend_from_slice(&chunk.bytes);
    out
}

/// The chunk a journal entry holds.
pub(super) fn decode_chunk(key: &Key, entry: &[u8]) -> Result<StoredChunk, Error> {
    let colon = entry.iter().position(|b| *b == b':');
    let parsed = colon.and_then(|at| {
        let offset = std::str::from_utf8(entry.get(..at)?).ok()?.parse().ok()?;
        Some(StoredChunk {
            offset_ms: offset,
            bytes: entry.get(at + 1..)?.to_vec(),
        })
    });
    parsed.ok_or_else(|| corrupt("", key, "stream journal entry without its offset".into()))
}

/// The parts of a script's array reply.
pub(super) struct Reply(Vec<Value>);

impl Reply {
    pub(super) fn new(value: Value) -> Self {
        match value {
            Value::Array(items) => Self(items),
            other => Self(vec![other]),
        }
    }

    /// Item `i` as text (empty if absent or nil).
    pub(super) fn text(&self, i: usize) -> String {
        self.0
            .get(i)
            .and_then(|v| redis::from_redis_value_ref::<Option<String>>(v).ok())
            .flatten()
            .unwrap_or_default()
    }

    /// Item `i` as bytes (`None` if absent or nil).
    pub(super) fn bytes(&self, i: usize) -> Option<Vec<u8>> {
        self.0
            .get(i)
            .and_then(|v| redis::from_redis_value_ref::<Option<Vec<u8>>>(v).ok())
            .flatten()
    }

    /// Item `i` as a number (0 if absent or nil).
    pub(super) fn int(&self, i: usize) -> i64 {
        self.0
            .get(i)
            .and_then(|v| redis::from_redis_value_ref::<Option<i64>>(v).ok())
            .flatten()
            .unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn journal_entries_round_trip() {
        let key = Key([1; 32]);
        let chunk = StoredChunk {
            offset_ms: 1234,
            bytes: b"{\"a\":\"x:y\"}".to_vec(),
        };
        let entry = encode_chunk(&chunk);
        assert_eq!(decode_chunk(&key, &entry).unwrap(), chunk);
        assert!(matches!(
            decode_chunk(&key, b"no offset"),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn log_lines_parse_as_cjson_writes_them() {
        let key = Key([1; 32]);
        let lines = vec![
            br#"{"a":1,"w":"w\/1","s":1700000000000,"o":"abandoned","e":1700000000300}"#.to_vec(),
            br#"{"o":"failed","s":1700000000400,"a":2,"w":"w","e":1700000000500,"x":"boom"}"#
                .to_vec(),
        ];
        let log = attempts(&key, &lines, &[]).unwrap();
        assert_eq!(log[0].worker, "w/1");
        assert_eq!(log[0].outcome, AttemptOutcome::Abandoned);
        assert_eq!(log[1].error.as_deref(), Some("boom"));
    }

    /// The record's fields of [`CURRENT_ATTEMPT`], from `(name, value)` pairs.
    fn current(pairs: &[(&str, &str)]) -> Vec<Option<Vec<u8>>> {
        CURRENT_ATTEMPT
            .iter()
            .map(|name| {
                pairs
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_bytes().to_vec())
            })
            .collect()
    }

    #[test]
    fn the_records_attempt_follows_the_logs_lines() {
        let key = Key([1; 32]);
        let past = vec![br#"{"a":3,"w":"w1","s":100,"o":"abandoned","e":400}"#.to_vec()];
        let running = current(&[
            ("attempt", "4"),
            ("worker", "w2"),
            ("as", "400"),
            ("updated", "400"),
            ("status", "running"),
        ]);
        let log = attempts(&key, &past, &running).unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!(
            (
                log[1].attempt,
                log[1].outcome,
                log[1].started_at,
                log[1].ended_at
            ),
            (4, AttemptOutcome::Running, 400, None)
        );
        let failed = current(&[
            ("attempt", "4"),
            ("worker", "w2"),
            ("as", "400"),
            ("updated", "900"),
            ("status", "failed"),
            ("err", "boom"),
            ("cost", r#"{"usd":0.5}"#),
            ("ao", "cancelled"),
        ]);
        let log = attempts(&key, &past, &failed).unwrap();
        assert_eq!(log[1].outcome, AttemptOutcome::Cancelled);
        assert_eq!(log[1].ended_at, Some(900));
        assert_eq!(log[1].error.as_deref(), Some("boom"));
        assert!(log[1].cost.is_some());
        // Finished by a format-1 build (no `ao`): the status and kind tell.
        let cached_error = current(&[
            ("attempt", "4"),
            ("as", "400"),
            ("updated", "900"),
            ("status", "completed"),
            ("kind", "err"),
        ]);
        let log = attempts(&key, &[], &cached_error).unwrap();
        assert_eq!(log[0].outcome, AttemptOutcome::Failed);
        assert_eq!(log[0].error, None);
        // A format-1 record (no `as`): the log holds every attempt.
        let format_1 = current(&[("attempt", "3"), ("status", "running")]);
        assert_eq!(attempts(&key, &past, &format_1).unwrap().len(), 1);
        assert!(attempts(&key, &[], &current(&[("as", "x")])).is_err());
    }
}
