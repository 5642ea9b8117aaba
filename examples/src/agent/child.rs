//! The agent process (started by the supervisor with `--child`): opens the application
//! database and idem, runs the agent to its answer, and prints the outcome as its last stdout
//! line.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use idem_runtime::store::sqlite::SqliteStore;
use idem_runtime::Idem;

use super::args::Args;
use super::client::Client;
use super::crash::CrashPoint;
use super::steps::Ctx;
use super::{app_db, ledger, run};

/// Runs this process as the agent.
pub(crate) async fn run(args: &Args) -> Result<()> {
    let run_id = args.run_id.as_deref().context("--run-id")?;
    let services = args.services.as_deref().context("--services")?;
    let db = app_db::open(args.app_db.as_deref().context("--app-db")?).await?;
    let worker = format!("agent/pid{}", std::process::id());
    let (idem, tx_idem) = if args.no_idem {
        (None, None)
    } else if args.store_in_app_db {
        // One database for the rows and every step's record.
        let store = SqliteStore::from_pool(db.clone()).await?;
        let idem = Idem::builder(Arc::new(store)).worker(worker).build();
        (Some(idem.clone()), Some(idem))
    } else {
        let store = idem_runtime::store::open(args.store.as_deref().context("--store")?).await?;
        let idem = Idem::builder(store).worker(worker.clone()).build();
        // The transactional step's store: idem's tables in the application's database, so the
        // claim, the row and the recorded result commit in one of the application's
        // transactions.
        let tx_store = SqliteStore::from_pool(db.clone()).await?;
        let tx_idem = Idem::builder(Arc::new(tx_store)).worker(worker).build();
        (Some(idem), Some(tx_idem))
    };
    let ctx = Ctx {
        run_id: run_id.to_owned(),
        client: Client::new(services, run_id)?,
        db,
        idem,
        tx_idem,
        crash: CrashPoint::new(args.stop_at),
    };
    let outcome = match &ctx.idem {
        Some(idem) => {
            let outcome = idem
                .scope(run::agent_run(&ctx, run_id, &args.topic, args.tool_calls))
                .await?;
            ledger::flush(idem).await?;
            outcome
        }
        None => run::agent_loop(&ctx, &args.topic, args.tool_calls).await?,
    };
    println!("{}", serde_json::to_string(&outcome)?);
    Ok(())
}
