//! Opening a store as it is, and finding a record by its key or a prefix of it.

use std::sync::Arc;
use std::time::Duration;

use idem_runtime::record::{Millis, Record, Status};
use idem_runtime::store::{redact_url, ListFilter, Store};
use idem_runtime::{Error, Key};

use crate::failure::{error_text, Failure};

/// The most records any command reads in one go (for prefix look-ups, `list --stuck` and
/// `release --expired`).
pub(crate) const SCAN_LIMIT: u32 = 1_000_000;

/// Opens a store as it is: no command creates a SQLite file, a PostgreSQL schema or a table, or
/// a Redis store's format marker, or migrates one (a typo would otherwise show, and leave behind, an empty store).
pub(crate) async fn open(url: &str, timeout: Duration) -> Result<Arc<dyn Store>, Failure> {
    let scheme = url.split(':').next().unwrap_or_default();
    if !matches!(
        scheme,
        "memory" | "sqlite" | "postgres" | "postgresql" | "redis" | "rediss"
    ) {
        return Err(Failure::usage(format!(
            "bad store URL `{}`: expected `sqlite://path`, `postgres://user@host/db`, \
             `redis://host:6379` or `memory:`",
            redact_url(url)
        )));
    }
    match tokio::time::timeout(timeout, idem_runtime::store::open_existing(url)).await {
        Ok(Ok(store)) => Ok(store),
        Ok(Err(e @ Error::Open { .. })) => {
            let text = error_text(&e);
            let (code, kind) = if text.contains("no idem tables") || text.contains("no idem store")
            {
                (3, "not_found")
            } else if text.contains("cargo feature") || text.contains("no database file path") {
                (2, "usage")
            } else {
                (1, "unreachable")
            };
            Err(Failure {
                code,
                kind,
                message: text,
            })
        }
        Ok(Err(e)) => Err(Failure {
            code: 1,
            kind: "unreachable",
            message: error_text(&e),
        }),
        Err(_) => Err(Failure {
            code: 1,
            kind: "unreachable",
            message: format!(
                "cannot open store `{}`: no answer within {timeout:?}",
                redact_url(url)
            ),
        }),
    }
}

/// Finds a record by its full key, or by a unique prefix of at least 4 hex digits.
pub(crate) async fn find(store: &dyn Store, text: &str) -> Result<Record, Failure> {
    let text = text.trim().to_ascii_lowercase();
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) || text.len() > 64 {
        return Err(Failure::usage(format!(
            "`{text}` is not a key: expected 64 hex digits (or a prefix of at least 4)"
        )));
    }
    if let Some(key) = Key::from_hex(&text) {
        return match store.get(&key).await.map_err(|e| Failure::store(&e))? {
            Some(record) => Ok(record),
            None => Err(Failure::not_found(format!("no record for key {text}"))),
        };
    }
    if text.len() < 4 {
        return Err(Failure::usage(format!(
            "key prefix `{text}` is too short: give at least 4 hex digits"
        )));
    }
    let all = store
        .list(&ListFilter {
            limit: Some(SCAN_LIMIT),
            ..ListFilter::default()
        })
        .await
        .map_err(|e| Failure::store(&e))?;
    let mut hits: Vec<Record> = all
        .into_iter()
        .filter(|r| r.key.to_hex().starts_with(&text))
        .collect();
    match hits.len() {
        0 => Err(Failure::not_found(format!(
            "no record for key prefix {text}"
        ))),
        // Listings carry no snapshot: read the whole record.
        1 => {
            let key = hits.remove(0).key;
            match store.get(&key).await.map_err(|e| Failure::store(&e))? {
                Some(record) => Ok(record),
                None => Err(Failure::not_found(format!("no record for key {key}"))),
            }
        }
        n => Err(Failure::not_found(format!(
            "key prefix {text} matches {n} records ({}...): give more digits",
            hits.iter()
                .take(3)
                .map(|r| r.key.short().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// A running record whose lease has expired: its worker died and nobody has called the key
/// since.
pub(crate) fn is_stuck(r: &Record, now: Millis) -> bool {
    r.status == Status::Running && r.lease_until.is_some_and(|l| l < now)
}
