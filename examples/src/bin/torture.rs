//! The torture harness of transactional steps: worker processes run `Idem::step` in their own
//! sqlx transactions, each step inserting rows into an application table, while this process
//! kills them with SIGKILL at random points and restarts them. At the end it checks that every
//! key committed exactly once with its rows: no key with rows of two executions (`duplicates`),
//! no completed snapshot without its rows (`lost`), no rows without their snapshot (`orphans`).
//!
//! ```sh
//! cargo run --release -p idem-examples --bin torture -- --store sqlite://target/torture.db --kills 1000
//! cargo run --release -p idem-examples --bin torture -- \
//!     --store postgres://postgres@127.0.0.1:5432/test --kills 1000
//! ```
//!
//! The last stdout line is one JSON object: `store, kills, keys, duplicates, lost, orphans,
//! seconds` and a few more counts. The exit status is 0 when all the checks hold, 1 when one
//! fails, 3 when the store's server is unreachable (so a test can skip).

#[path = "../torture/mod.rs"]
mod torture;

use clap::Parser;

use torture::Args;

fn main() {
    let args = Args::parse();
    // One thread: the workers' only concurrency is between processes, which is what is tested,
    // and the parent only waits on children and the database.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => torture::fail("tokio runtime", e),
    };
    let code = runtime.block_on(async {
        if let Some(id) = args.worker {
            torture::worker::run(&args, id).await
        } else {
            torture::parent::run(&args).await
        }
    });
    std::process::exit(code)
}
