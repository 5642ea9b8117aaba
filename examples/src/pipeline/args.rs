//! The example's command line: what a reader passes, and the hidden flags the parent passes to
//! the worker processes it starts.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// An AI pipeline with and without idem, under the same seeded faults.
#[derive(Debug, Parser)]
#[command(name = "ai_pipeline", about)]
pub(crate) struct Args {
    /// Inputs in the batch.
    #[arg(long, default_value_t = 24)]
    pub(crate) inputs: usize,
    /// Seed of the fault schedule (the same seed gives the same faults).
    #[arg(long, default_value_t = 7)]
    pub(crate) seed: u64,
    /// The idem store (default: a SQLite file in the run directory). `postgres://...` needs the
    /// `postgres` feature.
    #[arg(long, value_name = "URL")]
    pub(crate) store: Option<String>,
    /// Worker processes; each runs the whole batch (a duplicate-heavy queue): with idem every
    /// input is still processed once overall.
    #[arg(long, default_value_t = 1)]
    pub(crate) workers: usize,
    /// Kill worker 0 in the middle of a step once this many steps have finished, then restart it.
    #[arg(long, value_name = "N")]
    pub(crate) crash_after: Option<u64>,
    /// Run only the plain pipeline (retries, no idem).
    #[arg(long)]
    pub(crate) no_idem: bool,
    /// Keep the databases here (default: a temporary directory, deleted at the end).
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
    /// Make the model server deduplicate by `Idempotency-Key` (most providers do not).
    #[arg(long)]
    pub(crate) provider_dedup: bool,
    /// Percent of model requests that bill, then drop the connection.
    #[arg(long, default_value_t = 15)]
    pub(crate) drop_pct: u64,
    /// Percent of model requests slower than the client's timeout (they still bill).
    #[arg(long, default_value_t = 8)]
    pub(crate) slow_pct: u64,
    /// Percent of notify attempts that fail transiently (the whole task is retried).
    #[arg(long, default_value_t = 20)]
    pub(crate) notify_fail_pct: u64,
    /// Percent of tasks the queue delivers twice (the ack was lost).
    #[arg(long, default_value_t = 25)]
    pub(crate) redeliver_pct: u64,
    /// Inputs in flight per worker.
    #[arg(long, default_value_t = 6)]
    pub(crate) concurrency: usize,
    /// Serve the runtime's metrics for Prometheus on this address (from the first idem worker).
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics: Option<String>,
    /// Stream drafts token by token instead (server-sent events), with duplicate requests made
    /// while a stream is under way; runs in this process, without the queue.
    #[arg(long)]
    pub(crate) stream: bool,
    /// With `--stream`: prompts in the batch.
    #[arg(long, default_value_t = 50)]
    pub(crate) prompts: usize,
    /// Percent of streams the model breaks off part-way, after billing the tokens sent.
    #[arg(long, default_value_t = 20)]
    pub(crate) stream_drop_pct: u64,
    /// With `--stream`: percent of prompts asked for a second time while their first stream is
    /// under way.
    #[arg(long, default_value_t = 30)]
    pub(crate) duplicate_pct: u64,
    /// With `--metrics`: keep serving this many seconds after the work is done.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    pub(crate) linger: u64,

    // ---- internal: how the parent starts a worker ----
    #[arg(long, hide = true)]
    pub(crate) child: Option<Mode>,
    #[arg(long, hide = true)]
    pub(crate) model: Option<String>,
    #[arg(long, hide = true)]
    pub(crate) batch: Option<String>,
    #[arg(long, hide = true)]
    pub(crate) app_db: Option<PathBuf>,
    #[arg(long, hide = true, default_value_t = 0)]
    pub(crate) worker_index: usize,
}

/// Whether the steps run with idem or as plain retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// `#[idempotent]` and transactional steps.
    Idem,
    /// The same bodies, retried without idem.
    Plain,
}

impl Mode {
    /// The flag value, and the name in file names.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mode::Idem => "idem",
            Mode::Plain => "plain",
        }
    }
}

impl Args {
    /// What this run is, for the header lines: `24 inputs, seed 7, 1 worker(s), crash after ...`.
    pub(crate) fn describe(&self) -> String {
        if self.stream {
            return format!(
                "{} streamed prompts, seed {}, {}% asked twice mid-stream",
                self.prompts, self.seed, self.duplicate_pct
            );
        }
        let crash = self
            .crash_after
            .map(|n| format!(", crash after {n} steps"))
            .unwrap_or_default();
        format!(
            "{} inputs, seed {}, {} worker(s){crash}",
            self.inputs, self.seed, self.workers
        )
    }

    /// The flags a worker process of `mode` gets (those of the seeded schedule and the batch);
    /// `--crash-after` is the supervisor's to add.
    pub(crate) fn worker_flags(
        &self,
        mode: Mode,
        index: usize,
        model: &str,
        batch: &str,
        app_db: &std::path::Path,
        store: &str,
    ) -> Vec<String> {
        let mut flags: Vec<String> = vec![
            "--child".into(),
            mode.as_str().into(),
            "--model".into(),
            model.into(),
            "--batch".into(),
            batch.into(),
            "--app-db".into(),
            app_db.display().to_string(),
            "--worker-index".into(),
            index.to_string(),
            "--workers".into(),
            self.workers.to_string(),
            "--inputs".into(),
            self.inputs.to_string(),
            "--seed".into(),
            self.seed.to_string(),
            "--notify-fail-pct".into(),
            self.notify_fail_pct.to_string(),
            "--redeliver-pct".into(),
            self.redeliver_pct.to_string(),
            "--concurrency".into(),
            self.concurrency.to_string(),
            "--store".into(),
            store.into(),
        ];
        if let (Some(m), Mode::Idem, 0) = (&self.metrics, mode, index) {
            flags.extend([
                "--metrics".into(),
                m.clone(),
                "--linger".into(),
                self.linger.to_string(),
            ]);
        }
        flags
    }
}
