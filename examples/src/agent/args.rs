//! Command-line options of the `agent` example.

use std::path::PathBuf;

use clap::Parser;

/// An agent loop whose model turns and tool calls are idempotent steps, killed and restarted.
#[derive(Debug, Clone, Parser)]
#[command(name = "agent")]
pub(crate) struct Args {
    /// Kill (SIGKILL) the agent process this many times, at seeded steps, restarting it each
    /// time until the run completes.
    #[arg(long, default_value_t = 0)]
    pub(crate) crashes: u64,
    /// Run the same loop without idem: plain function calls, no Idempotency-Key.
    #[arg(long)]
    pub(crate) no_idem: bool,
    /// idem's store URL (sqlite://... or postgres://...); default: the application database
    /// (`app.db` in --dir), so one file holds the rows and every step's record.
    #[arg(long)]
    pub(crate) store: Option<String>,
    /// Where the application database goes (kept, for `idem show KEY --tree`); default: a
    /// temporary directory, removed at exit.
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
    /// Seed of the crash schedule and of the lost notification responses.
    #[arg(long, default_value_t = 14)]
    pub(crate) seed: u64,
    /// Tool calls the agent's task asks for (raised to --crashes if lower, so every crash has
    /// a step to land on).
    #[arg(long, default_value_t = 9)]
    pub(crate) tool_calls: u64,
    /// Percent of notifications whose first response is lost after the notification was sent.
    #[arg(long, default_value_t = 50)]
    pub(crate) notify_drop_pct: u64,
    /// What the agent researches.
    #[arg(long, default_value = "idempotent tool calls")]
    pub(crate) topic: String,
    /// Internal: run as the agent process (started by the supervisor).
    #[arg(long, hide = true)]
    pub(crate) child: bool,
    /// Internal: the run id.
    #[arg(long, hide = true)]
    pub(crate) run_id: Option<String>,
    /// Internal: the services' base URL.
    #[arg(long, hide = true)]
    pub(crate) services: Option<String>,
    /// Internal: the application database file.
    #[arg(long, hide = true)]
    pub(crate) app_db: Option<PathBuf>,
    /// Internal: idem's tables are in the application database (`--store` is ignored).
    #[arg(long, hide = true)]
    pub(crate) store_in_app_db: bool,
    /// Internal: the step at which this process waits to be killed.
    #[arg(long, hide = true)]
    pub(crate) stop_at: Option<u64>,
}
