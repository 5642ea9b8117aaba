//! The idempotent queue consumer example: publishes N messages (a share of them published
//! again, as a retrying publisher would), forces redeliveries (handlers outliving NATS's ack
//! wait; a consumer process killed with SIGKILL mid-run and restarted), consumes them through
//! idem into a table of the store's database, and prints one JSON line: `broker, published,
//! unique, deliveries, side_effects, duplicate_side_effects, dead_lettered, messages_per_s`.
//!
//! ```sh
//! cargo run --release -p idem-examples --bin consumer -- --broker nats://127.0.0.1:4222
//! cargo run --release -p idem-examples --bin consumer -- \
//!     --broker amqp://guest:guest@127.0.0.1:5672/%2f --store postgres://postgres@127.0.0.1:5432/test
//! cargo run --release -p idem-examples --bin consumer -- --broker nats://127.0.0.1:4222 --no-idem
//! ```
//!
//! Exit status 0 on success, 1 on failure, 3 when the broker or the store is unreachable.

#[path = "../consumer/mod.rs"]
mod consumer;

use clap::Parser;

fn main() {
    let args = consumer::Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => consumer::fail("start the Tokio runtime", e),
    };
    std::process::exit(runtime.block_on(consumer::main(args)));
}
