//! The consumer example: `parent.rs` publishes, runs the worker processes (killing one) and
//! reports; `worker.rs` consumes (through idem or not); `broker.rs` sets up and tears down the
//! run's stream or queues; `db.rs` is the side-effect table.

mod broker;
mod db;
mod parent;
mod worker;

use clap::Parser;

/// Exit status when the broker or the store is unreachable (a test then skips).
pub(crate) const EXIT_UNREACHABLE: i32 = 3;

#[derive(Debug, Clone, Parser)]
#[command(
    about = "Idempotent queue consumers on NATS JetStream or RabbitMQ, with and without idem"
)]
pub(crate) struct Args {
    /// The broker: nats://host:4222 or amqp://user:password@host:5672/%2f.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub(crate) broker: String,
    /// The store, which also holds the side-effect table: sqlite://path or postgres://...
    #[arg(long, default_value = "sqlite://target/consumer-example.db")]
    pub(crate) store: String,
    /// Unique messages to publish.
    #[arg(long, default_value_t = 200)]
    pub(crate) messages: u64,
    /// Share of the messages published a second time with the same id.
    #[arg(long, default_value_t = 0.1)]
    pub(crate) dup_share: f64,
    /// Share of the messages whose handler outlives NATS's 1 s ack wait (redelivered meanwhile).
    #[arg(long, default_value_t = 0.02)]
    pub(crate) slow_share: f64,
    /// Messages handled at once.
    #[arg(long, default_value_t = 16)]
    pub(crate) in_flight: usize,
    /// Messages committed together in one transaction, at most (group commit; 1: each
    /// message in its own transaction). Steps only.
    #[arg(long, default_value_t = 1)]
    pub(crate) group: usize,
    /// Do not SIGKILL the first consumer process mid-run.
    #[arg(long)]
    pub(crate) no_kill: bool,
    /// Run the handler as an ordinary idempotent call (its insert autocommits) instead of a
    /// step in a transaction: fewer statements, but a consumer killed between its insert and
    /// its completion runs it again.
    #[arg(long)]
    pub(crate) call: bool,
    /// Consume without idem (ack after the insert): shows the duplicates.
    #[arg(long)]
    pub(crate) no_idem: bool,
    /// Internal: run as a consumer process of run RUN.
    #[arg(long, hide = true)]
    pub(crate) worker: Option<String>,
}

/// Prints why and exits 1.
pub(crate) fn fail(what: &str, error: impl std::fmt::Display) -> ! {
    eprintln!("consumer: {what}: {error}");
    std::process::exit(1)
}

/// The program: a worker process, or the parent.
pub(crate) async fn main(args: Args) -> i32 {
    match args.worker.clone() {
        Some(run) => worker::main(&args, &run).await,
        None => parent::main(&args).await,
    }
}

/// A message's payload.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Job {
    pub(crate) id: String,
    pub(crate) slow: bool,
}
