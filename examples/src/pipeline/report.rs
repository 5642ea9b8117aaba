//! The report: one mode's figures, the side-by-side table and attempts log a reader looks at,
//! and the last stdout line (one JSON object) that scripts and the integration test read.

use std::time::Duration;

use serde_json::{json, Value};

use super::args::{Args, Mode};
use super::attempts::AttemptsLog;

/// One mode's figures.
#[derive(Debug, Clone, Default)]
pub(crate) struct Figures {
    pub(crate) model_calls: u64,
    pub(crate) tokens_billed: u64,
    pub(crate) dropped: u64,
    pub(crate) slow: u64,
    pub(crate) rows: i64,
    pub(crate) duplicate_rows: i64,
    pub(crate) notifications: i64,
    pub(crate) duplicate_notifications: i64,
    pub(crate) finished: i64,
    pub(crate) retries: u64,
    pub(crate) redeliveries: u64,
    pub(crate) crashes: u64,
    pub(crate) failed: u64,
    pub(crate) wall: Duration,
    /// The idem store's attempts log (idem mode only).
    pub(crate) attempts: AttemptsLog,
    /// Draft tokens that replays avoided, by idem's cost ledger (idem mode only).
    pub(crate) tokens_avoided: Option<u64>,
    /// What `--stream` measures (`--stream` only).
    pub(crate) stream: Option<StreamFigures>,
}

/// One `--stream` mode's figures.
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamFigures {
    /// Streams callers received and read until they ended, broken ones included.
    pub(crate) streams: u64,
    /// Tokens the server sent, and billed.
    pub(crate) stream_tokens_billed: u64,
    /// Generations the server started for a prompt whose draft an earlier generation had
    /// delivered or was delivering (not broken off): paid for twice.
    pub(crate) duplicate_generations: u64,
    /// Prompts asked for a second time while their first stream was under way.
    pub(crate) duplicate_requests: u64,
    /// Duplicate requests that read the draft while it was being generated for the first
    /// caller, with no generation of their own on the server.
    pub(crate) attached_streams: u64,
}

/// The last stdout line: the first mode's figures, and the plain mode's under `without_idem`
/// when both ran.
pub(crate) fn json_line(args: &Args, results: &[(Mode, Figures)]) -> Value {
    let Some((first_mode, first)) = results.first() else {
        return Value::Null;
    };
    let mut line = figures_json(first);
    line["idem"] = json!(*first_mode == Mode::Idem);
    line["inputs"] = json!(if args.stream {
        args.prompts
    } else {
        args.inputs
    });
    line["seed"] = json!(args.seed);
    line["workers"] = json!(args.workers);
    if let Some((_, plain)) = results
        .iter()
        .find(|(m, _)| *m == Mode::Plain && *first_mode == Mode::Idem)
    {
        line["without_idem"] = figures_json(plain);
    }
    line
}

fn figures_json(f: &Figures) -> Value {
    let mut figures = json!({
        "model_calls": f.model_calls,
        "tokens_billed": f.tokens_billed,
        "rows": f.rows,
        "duplicate_rows": f.duplicate_rows,
        "notifications": f.notifications,
        "duplicate_notifications": f.duplicate_notifications,
        "finished": f.finished,
        "retries": f.retries,
        "redeliveries": f.redeliveries,
        "crashes": f.crashes,
        "failed_inputs": f.failed,
        "wall_ms": u64::try_from(f.wall.as_millis()).unwrap_or(u64::MAX),
        "tokens_avoided": f.tokens_avoided,
    });
    if let Some(s) = &f.stream {
        figures["streams"] = json!(s.streams);
        figures["stream_tokens_billed"] = json!(s.stream_tokens_billed);
        figures["duplicate_generations"] = json!(s.duplicate_generations);
        figures["duplicate_requests"] = json!(s.duplicate_requests);
        figures["attached_streams"] = json!(s.attached_streams);
    }
    figures
}

/// Prints the table of both modes and the idem store's attempts log.
pub(crate) fn print(args: &Args, results: &[(Mode, Figures)], store: &str) {
    let get = |m: Mode| results.iter().find(|(mode, _)| *mode == m).map(|(_, f)| f);
    let (with, without) = (get(Mode::Idem), get(Mode::Plain));
    println!();
    println!(
        "ai_pipeline: {}{}",
        args.describe(),
        if args.provider_dedup {
            ", provider dedups Idempotency-Key"
        } else {
            ""
        }
    );
    if args.stream {
        println!(
            "faults: model breaks off {}% of streams after billing the tokens sent",
            args.stream_drop_pct
        );
    } else {
        println!(
            "faults: model drops the connection after billing {}%, slow {}%; notify fails {}%; queue redelivers {}%",
            args.drop_pct, args.slow_pct, args.notify_fail_pct, args.redeliver_pct
        );
    }
    println!();
    print_table(
        if args.stream { &STREAM_ROWS } else { &ROWS },
        with,
        without,
    );
    if let Some(f) = with {
        println!();
        print_attempts(&f.attempts, store);
    }
    println!();
}

type Row = (&'static str, fn(&Figures) -> String);

const ROWS: [Row; 12] = [
    ("model calls (billed)", |f| f.model_calls.to_string()),
    ("tokens billed", |f| f.tokens_billed.to_string()),
    ("tokens avoided (ledger)", |f| {
        f.tokens_avoided
            .map_or_else(|| "-".to_owned(), |t| t.to_string())
    }),
    ("  dropped after billing", |f| f.dropped.to_string()),
    ("  slower than the timeout", |f| f.slow.to_string()),
    ("rows saved", |f| f.rows.to_string()),
    ("duplicate rows", |f| f.duplicate_rows.to_string()),
    ("notifications", |f| f.notifications.to_string()),
    ("duplicate notifications", |f| {
        f.duplicate_notifications.to_string()
    }),
    ("task retries / redeliveries", |f| {
        format!("{} / {}", f.retries, f.redeliveries)
    }),
    ("worker crashes", |f| f.crashes.to_string()),
    ("wall time", |f| format!("{:.2}s", f.wall.as_secs_f64())),
];

/// The `--stream` rows (a mode that ran without `--stream` has no stream figures).
const STREAM_ROWS: [Row; 8] = [
    ("generations (billed)", |f| f.model_calls.to_string()),
    ("tokens billed", |f| f.tokens_billed.to_string()),
    ("  streams broken off", |f| f.dropped.to_string()),
    ("streams read by callers", |f| stream_cell(f, |s| s.streams)),
    ("duplicate generations", |f| {
        stream_cell(f, |s| s.duplicate_generations)
    }),
    ("duplicates attached / asked", |f| {
        let attached = stream_cell(f, |s| s.attached_streams);
        format!("{attached} / {}", stream_cell(f, |s| s.duplicate_requests))
    }),
    ("caller retries", |f| f.retries.to_string()),
    ("wall time", |f| format!("{:.2}s", f.wall.as_secs_f64())),
];

fn stream_cell(f: &Figures, get: fn(&StreamFigures) -> u64) -> String {
    f.stream
        .as_ref()
        .map_or_else(|| "-".to_owned(), |s| get(s).to_string())
}

fn print_table(rows: &[Row], with: Option<&Figures>, without: Option<&Figures>) {
    let cell = |f: Option<&Figures>, r: &Row| f.map_or_else(|| "-".to_owned(), |f| (r.1)(f));
    println!("{:<28} {:>12} {:>12}", "", "with idem", "without idem");
    println!("{:-<28} {:->12} {:->12}", "", "", "");
    for r in rows {
        println!("{:<28} {:>12} {:>12}", r.0, cell(with, r), cell(without, r));
    }
}

fn print_attempts(log: &AttemptsLog, store: &str) {
    println!(
        "attempts log from the idem store ({store}): {} keys, {} attempts; keys with more than one attempt or an unfinished one:",
        log.keys_total, log.attempts_total
    );
    if log.rows.is_empty() {
        println!("  (none: every key ran exactly once)");
    } else {
        println!(
            "{:<15} {:<13} {:>7}  {:<13} {:<10} {:>8}  error",
            "op", "key", "attempt", "worker", "outcome", "duration"
        );
        for a in &log.rows {
            println!(
                "{:<15} {:<13} {:>7}  {:<13} {:<10} {:>8}  {}",
                a.op,
                a.key,
                a.attempt,
                a.worker,
                a.outcome,
                a.duration
                    .map_or_else(|| "-".to_owned(), |d| format!("{d}ms")),
                a.error
            );
        }
    }
    println!(
        "inspect it: cargo run -p idem-cli -- --store {} list   (pass --dir to keep a SQLite store)",
        store
    );
}
