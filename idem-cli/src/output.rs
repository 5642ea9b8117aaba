//! Tables for people and JSON values for scripts; ages and timestamps.

use std::collections::BTreeMap;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use idem_runtime::record::{AttemptLog, Millis, Record, SnapshotKind};
use serde_json::{json, Value};

use crate::commands::stats::OpStats;

/// RFC 3339 in UTC with milliseconds.
pub(crate) fn iso(t: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(t).map_or_else(
        || t.to_string(),
        |d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
    )
}

fn iso_opt(t: Option<Millis>) -> Value {
    t.map_or(Value::Null, |t| Value::String(iso(t)))
}

/// `3s ago`, `in 25s`.
pub(crate) fn age(t: Millis, now: Millis) -> String {
    let d = now - t;
    let s = short(d.unsigned_abs());
    if d >= 0 {
        format!("{s} ago")
    } else {
        format!("in {s}")
    }
}

fn short(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{}s", ms / 1000),
        60_000..3_600_000 => format!("{}m", ms / 60_000),
        3_600_000..86_400_000 => format!("{}h", ms / 3_600_000),
        _ => format!("{}d", ms / 86_400_000),
    }
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
    t
}

pub(crate) fn clip(s: &str, max: usize) -> String {
    let one_line = s.replace('\n', " ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

pub(crate) fn records_table(records: &[Record], now: Millis) -> Table {
    let mut t = table(&[
        "key",
        "op",
        "status",
        "attempt",
        "worker",
        "updated",
        "lease / expires",
        "error",
    ]);
    for r in records {
        let until = match r.status {
            idem_runtime::record::Status::Running => r.lease_until.map(|l| {
                if l < now {
                    format!("lease expired {}", age(l, now))
                } else {
                    format!("lease {}", age(l, now))
                }
            }),
            _ => r.expires_at.map(|e| format!("expires {}", age(e, now))),
        };
        t.add_row(vec![
            r.key.short().to_string(),
            r.op.clone(),
            r.status.to_string(),
            r.attempt.to_string(),
            r.worker.clone().unwrap_or_default(),
            age(r.updated_at, now),
            until.unwrap_or_default(),
            clip(r.error.as_deref().unwrap_or(""), 60),
        ]);
    }
    t
}

pub(crate) fn attempts_table(attempts: &[AttemptLog]) -> Table {
    let mut t = table(&[
        "attempt", "worker", "started", "duration", "outcome", "error",
    ]);
    for a in attempts {
        t.add_row(vec![
            a.attempt.to_string(),
            a.worker.clone(),
            iso(a.started_at),
            a.ended_at.map_or_else(
                || "-".to_owned(),
                |e| short(u64::try_from(e - a.started_at).unwrap_or(0)),
            ),
            a.outcome.to_string(),
            clip(a.error.as_deref().unwrap_or(""), 80),
        ]);
    }
    t
}

/// The cost ledger: per operation and unit, what attempts spent and replays avoided.
pub(crate) fn costs_table(costs: &[idem_runtime::store::CostLine]) -> Table {
    let mut t = table(&["op", "unit", "spent", "avoided", "replays", "avoided %"]);
    for c in costs {
        t.add_row(vec![
            c.op.clone(),
            c.unit.clone(),
            amount(c.spent),
            amount(c.avoided),
            c.replays.to_string(),
            crate::commands::stats::avoided_share(c)
                .map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0)),
        ]);
    }
    t
}

/// An amount: whole numbers as such (tokens), others with up to 4 decimals (money).
fn amount(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

pub(crate) fn stats_table(by_op: &BTreeMap<String, OpStats>, total: &OpStats) -> Table {
    let mut t = table(&[
        "op",
        "records",
        "running",
        "stuck",
        "completed",
        "failed",
        "attempts",
        "re-exec",
    ]);
    let row = |name: &str, s: &OpStats| {
        vec![
            name.to_owned(),
            s.records.to_string(),
            s.running.to_string(),
            s.stuck.to_string(),
            s.completed.to_string(),
            s.failed.to_string(),
            s.attempts.to_string(),
            s.reexecution_ratio()
                .map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0)),
        ]
    };
    for (op, s) in by_op {
        t.add_row(row(op, s));
    }
    t.add_row(row("(all)", total));
    t
}

pub(crate) fn record_json(r: &Record) -> Value {
    json!({
        "key": r.key.to_hex(),
        "op": r.op,
        "status": r.status.as_str(),
        "attempt": r.attempt,
        "worker": r.worker,
        "error": r.error,
        "snapshot_kind": r.snapshot_kind.map(SnapshotKind::as_str),
        "snapshot_bytes": r.snapshot.as_ref().map(Vec::len),
        "lease_until": iso_opt(r.lease_until),
        "created_at": iso(r.created_at),
        "updated_at": iso(r.updated_at),
        "expires_at": iso_opt(r.expires_at),
        "parent": r.parent.map(|p| p.key.to_hex()),
        "position": r.parent.map(|p| p.position),
    })
}

pub(crate) fn attempt_json(a: &AttemptLog) -> Value {
    json!({
        "attempt": a.attempt,
        "worker": a.worker,
        "started_at": iso(a.started_at),
        "ended_at": iso_opt(a.ended_at),
        "duration_ms": a.ended_at.map(|e| e - a.started_at),
        "outcome": a.outcome.as_str(),
        "error": a.error,
    })
}

/// The snapshot as text (it is JSON), cut to one line.
pub(crate) fn snapshot_preview(bytes: &[u8], kind: Option<SnapshotKind>) -> String {
    let text = String::from_utf8_lossy(bytes);
    let kind = kind.map_or("?", SnapshotKind::as_str);
    format!("{kind}, {} bytes: {}", bytes.len(), clip(&text, 100))
}
