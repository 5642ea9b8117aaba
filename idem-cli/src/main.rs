//! `idem`: the operator's command-line tool over any idem store (`sqlite://`, `postgres://`,
//! `memory:`): list and filter records, show one with its attempts, forget a key, release stuck
//! ones, purge expired ones, and count them. See `docs/cli.md`.
//!
//! Every command opens the store as it is (`store::open_existing`): no command creates a file, a
//! schema or a table, or migrates one.
//!
//! Exit codes: 0 success (also when stdout is closed early, as by `idem list | head -1`); 1 the
//! store failed or could not be reached; 2 bad usage (a bad argument, a bad store URL, a
//! malformed key); 3 no such key (or a key prefix that matches several), or a store without
//! idem tables; 4 `release` or `forget` refused a key whose lease is still live (pass
//! `--force`).

mod output;
mod scrape;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use idem_runtime::record::{now_millis, Record, Status};
use idem_runtime::store::{redact_url, ListFilter, OpCounts, Store};
use idem_runtime::{Error, Idem, Key};
use serde_json::json;

use crate::output::{age, attempts_table, parse_duration, record_json, records_table, stats_table};

/// Inspect and repair the records of an idem store.
#[derive(Debug, Parser)]
#[command(name = "idem", version, about, long_about = None)]
struct Cli {
    /// The store: `sqlite://path/to/idem.db`, `postgres://user@host/db`, `memory:`.
    #[arg(long, env = "IDEM_STORE", global = true, value_name = "URL")]
    store: Option<String>,
    /// Print JSON for scripts instead of tables for people.
    #[arg(long, global = true)]
    json: bool,
    /// Give up on connecting to the store after this long (e.g. `10s`).
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List records, newest first.
    List(ListArgs),
    /// Show one record and its attempts log. KEY is the 64-digit hex key or a unique prefix.
    Show {
        /// The key (64 hex digits) or a prefix of at least 4 digits.
        key: String,
    },
    /// Forget a key: delete its record and attempts log, so the next call runs the body again.
    /// A key whose attempt is running with a live lease is refused (exit 4) unless `--force`.
    Forget {
        /// The key (64 hex digits) or a prefix of at least 4 digits.
        key: String,
        /// Forget even a running key whose lease is live (a second attempt may then run beside
        /// the live one).
        #[arg(long)]
        force: bool,
    },
    /// Release stuck keys: mark running attempts failed so the next call runs again now.
    Release(ReleaseArgs),
    /// Delete expired records (completed or failed past their ttl, and abandoned running ones).
    Purge {
        /// Rows deleted per store transaction.
        #[arg(long, default_value_t = 1000)]
        batch: u32,
        /// Running records whose lease expired more than this long ago count as expired.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        abandoned_after: Duration,
    },
    /// Count records by status and operation; with `--metrics`, the replay ratio too.
    Stats(StatsArgs),
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Only this operation.
    #[arg(long)]
    op: Option<String>,
    /// Only this status.
    #[arg(long, value_enum)]
    status: Option<StatusArg>,
    /// Only records last updated longer ago than this (e.g. `10m`, `2h`, `7d`).
    #[arg(long, value_parser = parse_duration, value_name = "AGE")]
    older_than: Option<Duration>,
    /// Only records last updated within this (e.g. `30s`, `1h`).
    #[arg(long, value_parser = parse_duration, value_name = "AGE")]
    newer_than: Option<Duration>,
    /// Only running records whose lease has expired (stuck or abandoned).
    #[arg(long)]
    stuck: bool,
    /// At most this many records.
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

#[derive(Debug, Args)]
struct ReleaseArgs {
    /// The key to release (64 hex digits or a unique prefix).
    #[arg(required_unless_present = "expired", conflicts_with = "expired")]
    key: Option<String>,
    /// Release every running key whose lease has expired.
    #[arg(long)]
    expired: bool,
    /// With `--expired`: only this operation.
    #[arg(long, requires = "expired")]
    op: Option<String>,
    /// With `--expired`: only those whose lease expired longer ago than this.
    #[arg(long, value_parser = parse_duration, value_name = "AGE", requires = "expired")]
    older_than: Option<Duration>,
    /// With KEY: release even though the lease is still live (the attempt may still be running;
    /// its completion will then be fenced).
    #[arg(long, requires = "key")]
    force: bool,
}

#[derive(Debug, Args)]
struct StatsArgs {
    /// Only this operation.
    #[arg(long)]
    op: Option<String>,
    /// A Prometheus endpoint of a process using idem (`http://127.0.0.1:9000/metrics`), read for
    /// the replay ratio.
    #[arg(long, value_name = "URL")]
    metrics: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StatusArg {
    Running,
    Completed,
    Failed,
}

impl From<StatusArg> for Status {
    fn from(s: StatusArg) -> Self {
        match s {
            StatusArg::Running => Status::Running,
            StatusArg::Completed => Status::Completed,
            StatusArg::Failed => Status::Failed,
        }
    }
}

/// A failure of one command: what to say and which exit code to use.
#[derive(Debug)]
pub(crate) struct Failure {
    code: u8,
    kind: &'static str,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            kind: "usage",
            message: message.into(),
        }
    }
    fn not_found(message: impl Into<String>) -> Self {
        Self {
            code: 3,
            kind: "not_found",
            message: message.into(),
        }
    }
    fn store(err: &Error) -> Self {
        Self {
            code: 1,
            kind: "store",
            message: error_text(err),
        }
    }
    /// Stdout was closed by its reader (`idem list | head -1`): stop quietly.
    fn broken_pipe() -> Self {
        Self {
            code: 0,
            kind: "broken_pipe",
            message: String::new(),
        }
    }
}

/// An error of the runtime as one line of this tool: its messages start with `idem: `, which
/// the tool's own `idem: error: ` prefix already says.
fn error_text(err: &Error) -> String {
    let text = err.to_string();
    match text.strip_prefix("idem: ") {
        Some(rest) => rest.to_owned(),
        None => text,
    }
}

/// Writes one line to stdout. A reader that went away (`| head -1`) ends the command quietly
/// instead of a panic; any other write error is a failure.
fn emit(line: impl fmt::Display) -> Result<(), Failure> {
    match writeln!(std::io::stdout().lock(), "{line}") {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure::broken_pipe()),
        Err(e) => Err(Failure {
            code: 1,
            kind: "output",
            message: format!("cannot write to stdout: {e}"),
        }),
    }
}

/// `println!` that returns [`Failure`] instead of panicking on a closed stdout.
macro_rules! say {
    () => { emit("")? };
    ($($arg:tt)*) => { emit(format_args!($($arg)*))? };
}

/// The most records any command reads in one go (for `stats`, prefix look-ups and `release
/// --expired`).
const SCAN_LIMIT: u32 = 1_000_000;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return report(
                json,
                &Failure {
                    code: 1,
                    kind: "runtime",
                    message: e.to_string(),
                },
            )
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) if failure.kind == "broken_pipe" => ExitCode::SUCCESS,
        Err(failure) => report(json, &failure),
    }
}

fn report(json: bool, failure: &Failure) -> ExitCode {
    let message = failure
        .message
        .strip_prefix("idem: ")
        .unwrap_or(&failure.message);
    let _ = writeln!(std::io::stderr().lock(), "idem: error: {message}");
    if json {
        // Best effort: stdout may be the closed pipe this failure is about.
        let _ = writeln!(
            std::io::stdout().lock(),
            "{}",
            json!({ "error": { "kind": failure.kind, "message": message } })
        );
    }
    ExitCode::from(failure.code)
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let Some(url) = cli.store.as_deref() else {
        return Err(Failure::usage(
            "no store given: pass `--store URL` or set IDEM_STORE (e.g. sqlite://idem.db, postgres://user@host/db)",
        ));
    };
    let store = open(url, cli.timeout).await?;
    let json = cli.json;
    match cli.command {
        Command::List(args) => list(&*store, &args, json).await,
        Command::Show { key } => show(&*store, &key, json).await,
        Command::Forget { key, force } => forget(store, &key, force, json).await,
        Command::Release(args) => release(&*store, &args, json).await,
        Command::Purge {
            batch,
            abandoned_after,
        } => {
            let idem = Idem::builder(store).cache_capacity(0).build();
            let n = idem
                .purge_expired(batch, abandoned_after)
                .await
                .map_err(|e| Failure::store(&e))?;
            if json {
                say!("{}", json!({ "purged": n }));
            } else {
                say!("purged {n} expired record(s)");
            }
            Ok(())
        }
        Command::Stats(args) => stats(&*store, &args, json).await,
    }
}

/// Opens a store as it is: no command creates a SQLite file, a PostgreSQL schema or a table, or
/// migrates one (a typo would otherwise show, and leave behind, an empty store).
async fn open(url: &str, timeout: Duration) -> Result<Arc<dyn Store>, Failure> {
    let scheme = url.split(':').next().unwrap_or_default();
    if !matches!(scheme, "memory" | "sqlite" | "postgres" | "postgresql") {
        return Err(Failure::usage(format!(
            "bad store URL `{}`: expected `sqlite://path`, `postgres://user@host/db` or `memory:`",
            redact_url(url)
        )));
    }
    match tokio::time::timeout(timeout, idem_runtime::store::open_existing(url)).await {
        Ok(Ok(store)) => Ok(store),
        Ok(Err(e @ Error::Open { .. })) => {
            let text = error_text(&e);
            let (code, kind) = if text.contains("no idem tables") {
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
async fn find(store: &dyn Store, text: &str) -> Result<Record, Failure> {
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

async fn list(store: &dyn Store, args: &ListArgs, json: bool) -> Result<(), Failure> {
    let now = now_millis();
    let filter = ListFilter {
        op: args.op.clone(),
        status: if args.stuck {
            Some(Status::Running)
        } else {
            args.status.map(Status::from)
        },
        updated_before: args.older_than.map(|d| now - millis(d)),
        limit: Some(if args.newer_than.is_some() || args.stuck {
            SCAN_LIMIT
        } else {
            args.limit
        }),
    };
    let mut records = store.list(&filter).await.map_err(|e| Failure::store(&e))?;
    if let Some(d) = args.newer_than {
        records.retain(|r| r.updated_at >= now - millis(d));
    }
    if args.stuck {
        records.retain(|r| is_stuck(r, now));
    }
    records.truncate(usize::try_from(args.limit).unwrap_or(usize::MAX));
    if json {
        // Listings never read snapshots (they may be megabytes each): `show` has their size.
        let rows: Vec<_> = records
            .iter()
            .map(|r| {
                let mut row = record_json(r);
                if let Some(fields) = row.as_object_mut() {
                    fields.remove("snapshot_bytes");
                }
                row
            })
            .collect();
        say!("{}", serde_json::Value::Array(rows));
    } else if records.is_empty() {
        say!("no records");
    } else {
        say!("{}", records_table(&records, now));
    }
    Ok(())
}

async fn show(store: &dyn Store, key: &str, json: bool) -> Result<(), Failure> {
    let record = find(store, key).await?;
    let attempts = store
        .attempts(&record.key)
        .await
        .map_err(|e| Failure::store(&e))?;
    let now = now_millis();
    if json {
        let mut value = record_json(&record);
        value["attempts"] = attempts.iter().map(output::attempt_json).collect();
        say!("{value}");
        return Ok(());
    }
    let opt = |v: Option<i64>| {
        v.map_or_else(
            || "-".to_owned(),
            |t| format!("{} ({})", output::iso(t), age(t, now)),
        )
    };
    say!("key:        {}", record.key);
    say!("op:         {}", record.op);
    say!(
        "status:     {}{}",
        record.status,
        if is_stuck(&record, now) {
            " (stuck: lease expired)"
        } else {
            ""
        }
    );
    say!("attempt:    {}", record.attempt);
    say!("worker:     {}", record.worker.as_deref().unwrap_or("-"));
    say!("created:    {}", opt(Some(record.created_at)));
    say!("updated:    {}", opt(Some(record.updated_at)));
    say!(
        "lease until:{}",
        format_args!(" {}", opt(record.lease_until))
    );
    say!("expires:    {}", opt(record.expires_at));
    say!(
        "snapshot:   {}",
        record.snapshot.as_ref().map_or_else(
            || "-".to_owned(),
            |s| output::snapshot_preview(s, record.snapshot_kind)
        )
    );
    if let Some(error) = &record.error {
        say!("error:      {error}");
    }
    say!();
    if attempts.is_empty() {
        say!("no attempts logged");
    } else {
        say!("{}", attempts_table(&attempts));
    }
    Ok(())
}

async fn forget(store: Arc<dyn Store>, key: &str, force: bool, json: bool) -> Result<(), Failure> {
    let record = find(&*store, key).await?;
    let idem = Idem::builder(store).cache_capacity(0).build();
    let forgotten = if force {
        idem.force_forget(&record.key).await
    } else {
        idem.forget(&record.key).await
    };
    let existed = match forgotten {
        Ok(existed) => existed,
        Err(e @ Error::Running { .. }) => {
            return Err(Failure {
                code: 4,
                kind: "lease_live",
                message: error_text(&e),
            })
        }
        Err(e) => return Err(Failure::store(&e)),
    };
    if !existed {
        return Err(Failure::not_found(format!(
            "no record for key {}",
            record.key
        )));
    }
    if json {
        say!(
            "{}",
            json!({ "forgotten": record.key.to_hex(), "op": record.op })
        );
    } else {
        say!(
            "forgot {} (op {}): the next call runs the body again",
            record.key,
            record.op
        );
    }
    Ok(())
}

async fn release(store: &dyn Store, args: &ReleaseArgs, json: bool) -> Result<(), Failure> {
    let now = now_millis();
    let targets: Vec<Record> = if let Some(key) = &args.key {
        let record = find(store, key).await?;
        if record.status != Status::Running {
            return Err(Failure::not_found(format!(
                "key {} is {}, not running: nothing to release",
                record.key, record.status
            )));
        }
        if !args.force && !is_stuck(&record, now) {
            let left = record.lease_until.unwrap_or(now) - now;
            return Err(Failure {
                code: 4,
                kind: "lease_live",
                message: format!(
                    "key {} is held by a live lease for {} more ms (worker {}); pass --force to release it anyway",
                    record.key,
                    left,
                    record.worker.as_deref().unwrap_or("?")
                ),
            });
        }
        vec![record]
    } else {
        let grace = args.older_than.map_or(0, millis);
        store
            .list(&ListFilter {
                op: args.op.clone(),
                status: Some(Status::Running),
                limit: Some(SCAN_LIMIT),
                ..ListFilter::default()
            })
            .await
            .map_err(|e| Failure::store(&e))?
            .into_iter()
            .filter(|r| r.lease_until.is_some_and(|l| l + grace < now))
            .collect()
    };
    let mut released = Vec::new();
    for record in &targets {
        if store
            .release(&record.key)
            .await
            .map_err(|e| Failure::store(&e))?
        {
            released.push(record);
        }
    }
    if json {
        let keys: Vec<_> = released
            .iter()
            .map(|r| json!({ "key": r.key.to_hex(), "op": r.op, "attempt": r.attempt }))
            .collect();
        say!("{}", json!({ "released": released.len(), "keys": keys }));
    } else if released.is_empty() {
        say!("released nothing (no running key with an expired lease)");
    } else {
        for r in &released {
            say!("released {} (op {}, attempt {})", r.key, r.op, r.attempt);
        }
        say!(
            "released {} key(s): their next call runs the body again",
            released.len()
        );
    }
    Ok(())
}

/// Per-operation counts.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub(crate) struct OpStats {
    pub(crate) records: u64,
    pub(crate) running: u64,
    pub(crate) stuck: u64,
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    /// Executions of the body: the sum of the records' attempt numbers.
    pub(crate) attempts: u64,
}

impl OpStats {
    fn from_counts(c: &OpCounts) -> Self {
        Self {
            records: c.records,
            running: c.running,
            stuck: c.stuck,
            completed: c.completed,
            failed: c.failed,
            attempts: c.attempts,
        }
    }

    fn add(&mut self, other: &OpStats) {
        self.records += other.records;
        self.running += other.running;
        self.stuck += other.stuck;
        self.completed += other.completed;
        self.failed += other.failed;
        self.attempts += other.attempts;
    }

    /// Share of executions that re-ran a key already attempted (retries after failures,
    /// takeovers of crashed workers): `(attempts - records) / attempts`.
    pub(crate) fn reexecution_ratio(&self) -> Option<f64> {
        (self.attempts > 0)
            .then(|| (self.attempts.saturating_sub(self.records)) as f64 / self.attempts as f64)
    }
}

async fn stats(store: &dyn Store, args: &StatsArgs, json: bool) -> Result<(), Failure> {
    // Counted by the store (in SQL for SQLite and PostgreSQL): no record, let alone a
    // snapshot, is read.
    let counts = store
        .counts(args.op.as_deref())
        .await
        .map_err(|e| Failure::store(&e))?;
    let mut total = OpStats::default();
    let mut by_op: BTreeMap<String, OpStats> = BTreeMap::new();
    for c in &counts {
        let s = OpStats::from_counts(c);
        total.add(&s);
        by_op.insert(c.op.clone(), s);
    }
    let counters = match &args.metrics {
        Some(url) => Some(scrape::counters(url).map_err(|e| Failure {
            code: 1,
            kind: "metrics",
            message: format!("cannot read metrics from `{url}`: {e}"),
        })?),
        None => None,
    };
    let replay_ratio = counters.as_ref().and_then(scrape::Counters::replay_ratio);
    if json {
        let ops: serde_json::Map<_, _> = by_op
            .iter()
            .map(|(op, s)| {
                let mut v = json!(s);
                v["reexecution_ratio"] = json!(s.reexecution_ratio());
                (op.clone(), v)
            })
            .collect();
        let mut value = json!(total);
        value["reexecution_ratio"] = json!(total.reexecution_ratio());
        value["by_op"] = serde_json::Value::Object(ops);
        value["replay_ratio"] = json!(replay_ratio);
        if let Some(c) = &counters {
            value["metrics"] = json!({ "executions": c.executions, "replays": c.replays });
        }
        say!("{value}");
        return Ok(());
    }
    say!("{}", stats_table(&by_op, &total));
    let pct = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0));
    say!(
        "re-execution ratio: {} (executions that re-ran an already-attempted key)",
        pct(total.reexecution_ratio())
    );
    match &counters {
        Some(c) => say!(
            "replay ratio:       {} ({} replays, {} executions, from {})",
            pct(replay_ratio),
            c.replays,
            c.executions,
            args.metrics.as_deref().unwrap_or_default()
        ),
        None => say!("replay ratio:       - (the store does not log replays; pass --metrics URL of a process's Prometheus endpoint)"),
    }
    Ok(())
}

fn is_stuck(r: &Record, now: i64) -> bool {
    r.status == Status::Running && r.lease_until.is_some_and(|l| l < now)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
