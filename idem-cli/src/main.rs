//! `idem`: the operator's command-line tool over any idem store (`sqlite://`, `postgres://`,
//! `memory:`): list and filter records, show one with its attempts, forget a key, release stuck
//! ones, purge expired ones, and count them. See `docs/cli.md`.
//!
//! This file holds the arguments and the dispatch; each command lives in its own module under
//! `commands`. Every command opens the store as it is (`store::open`): no command creates a
//! file, a schema or a table, or migrates one. The exit codes are listed in `failure`.

mod commands;
mod duration;
mod failure;
mod output;
mod scrape;
mod stdout;
mod store;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use idem_runtime::record::Status;

use crate::commands::{forget, list, purge, release, show, stats, tree};
use crate::duration::parse_duration;
use crate::failure::Failure;

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
    /// Give up on connecting to the store after this long (e.g. `10s`, `1m30s`).
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
        /// Print the run this key started instead: its steps (calls made inside its body), their
        /// steps, and so on, with their outcomes, durations and attempts.
        #[arg(long)]
        tree: bool,
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
        /// Running records whose lease expired more than this long ago count as expired (e.g.
        /// `1h`, `1h30m`).
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        abandoned_after: Duration,
    },
    /// Count records by status and operation; with `--metrics`, the replay ratio too.
    Stats(StatsArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only this operation.
    #[arg(long)]
    pub(crate) op: Option<String>,
    /// Only this status.
    #[arg(long, value_enum)]
    pub(crate) status: Option<StatusArg>,
    /// Only records last updated longer ago than this (e.g. `10m`, `2h`, `7d`).
    #[arg(long, value_parser = parse_duration, value_name = "AGE")]
    pub(crate) older_than: Option<Duration>,
    /// Only records last updated within this (e.g. `30s`, `1h`).
    #[arg(long, value_parser = parse_duration, value_name = "AGE")]
    pub(crate) newer_than: Option<Duration>,
    /// Only running records whose lease has expired (stuck or abandoned).
    #[arg(long)]
    pub(crate) stuck: bool,
    /// At most this many records.
    #[arg(long, default_value_t = 100)]
    pub(crate) limit: u32,
}

#[derive(Debug, Args)]
pub(crate) struct ReleaseArgs {
    /// The key to release (64 hex digits or a unique prefix).
    #[arg(required_unless_present = "expired", conflicts_with = "expired")]
    pub(crate) key: Option<String>,
    /// Release every running key whose lease has expired.
    #[arg(long)]
    pub(crate) expired: bool,
    /// With `--expired`: only this operation.
    #[arg(long, requires = "expired")]
    pub(crate) op: Option<String>,
    /// With `--expired`: only those whose lease expired longer ago than this.
    #[arg(long, value_parser = parse_duration, value_name = "AGE", requires = "expired")]
    pub(crate) older_than: Option<Duration>,
    /// With KEY: release even though the lease is still live (the attempt may still be running;
    /// its completion will then be fenced).
    #[arg(long, requires = "key")]
    pub(crate) force: bool,
}

#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    /// Only this operation.
    #[arg(long)]
    pub(crate) op: Option<String>,
    /// A Prometheus endpoint of a process using idem (`http://127.0.0.1:9000/metrics`), read for
    /// the replay ratio.
    #[arg(long, value_name = "URL")]
    pub(crate) metrics: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum StatusArg {
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
            return Failure {
                code: 1,
                kind: "runtime",
                message: e.to_string(),
            }
            .report(json)
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) if failure.is_broken_pipe() => ExitCode::SUCCESS,
        Err(failure) => failure.report(json),
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let Some(url) = cli.store.as_deref() else {
        return Err(Failure::usage(
            "no store given: pass `--store URL` or set IDEM_STORE (e.g. sqlite://idem.db, postgres://user@host/db)",
        ));
    };
    let store = store::open(url, cli.timeout).await?;
    let json = cli.json;
    match cli.command {
        Command::List(args) => list::run(&*store, &args, json).await,
        Command::Show { key, tree: false } => show::run(&*store, &key, json).await,
        Command::Show { key, tree: true } => tree::run(&*store, &key, json).await,
        Command::Forget { key, force } => forget::run(store, &key, force, json).await,
        Command::Release(args) => release::run(&*store, &args, json).await,
        Command::Purge {
            batch,
            abandoned_after,
        } => purge::run(store, batch, abandoned_after, json).await,
        Command::Stats(args) => stats::run(&*store, &args, json).await,
    }
}
