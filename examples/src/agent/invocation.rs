//! One invocation of the example: start the services, run an uncrashed reference agent, then
//! the agent under the supervisor's crash schedule, and compare what the services, the
//! application database and idem's cost ledger saw.

use anyhow::Result;
use idem_runtime::{Error, Idem};

use super::args::Args;
use super::report::Report;
use super::services::Services;
use super::supervise::{kill_points, run_to_completion};
use super::{app_db, ledger};

/// The process's exit status when the store's server is unreachable.
pub(crate) const EXIT_UNREACHABLE: i32 = 3;

/// The store's server could not be reached (the process exits with [`EXIT_UNREACHABLE`]).
#[derive(Debug, thiserror::Error)]
#[error("the store's server is unreachable: {0}")]
pub(crate) struct Unreachable(Error);

/// Runs the invocation and returns its report.
pub(crate) async fn run(args: &Args) -> Result<Report> {
    let temp = tempfile::tempdir()?;
    let dir = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => temp.path().to_owned(),
    };
    let app_db_path = dir.join("app.db");
    let store = match &args.store {
        Some(url) => url.clone(),
        None => format!("sqlite://{}", app_db_path.display()),
    };
    let idem = if args.no_idem {
        None
    } else {
        match Idem::open(&store).await {
            Ok(idem) => Some(idem),
            Err(e @ Error::Open { .. }) if e.to_string().contains("cannot connect") => {
                return Err(Unreachable(e).into());
            }
            Err(e) => return Err(anyhow::Error::new(e).context("opening idem's store")),
        }
    };
    let services = Services::start(args.seed, args.notify_drop_pct).await?;
    let tool_calls = args.tool_calls.max(args.crashes);
    let batch = uuid::Uuid::new_v4().simple().to_string();
    let flags = |run_id: &str| {
        let mut flags = vec![
            "--child".to_owned(),
            format!("--run-id={run_id}"),
            format!("--services={}", services.url()),
            format!("--app-db={}", app_db_path.display()),
            format!("--store={store}"),
            format!("--tool-calls={tool_calls}"),
            format!("--topic={}", args.topic),
        ];
        if args.no_idem {
            flags.push("--no-idem".to_owned());
        }
        if args.store.is_none() {
            flags.push("--store-in-app-db".to_owned());
        }
        flags
    };

    // The reference: the same agent, never killed.
    let reference_id = format!("reference-{batch}");
    let (reference, _) = run_to_completion(&flags(&reference_id), &[]).await?;
    let steps = reference.model_turns + reference.tool_calls;
    let kills = kill_points(args.seed, steps, args.crashes);

    let avoided_before = match &idem {
        Some(idem) => ledger::avoided_tokens(idem).await?,
        None => 0.0,
    };
    let run_id = format!("run-{batch}");
    let (outcome, crashes) = run_to_completion(&flags(&run_id), &kills).await?;
    let tokens_avoided = match &idem {
        Some(idem) => ledger::avoided_tokens(idem).await? - avoided_before,
        None => 0.0,
    };

    let meter = services.meter(&run_id);
    let db = app_db::open(&app_db_path).await?;
    let (_, duplicate_rows) = app_db::tally(&db, &run_id).await?;
    let duplicate_rows = u64::try_from(duplicate_rows).unwrap_or_default();
    Ok(Report {
        idem: !args.no_idem,
        runs: crashes + 1,
        crashes,
        model_turns: meter.model_turns,
        tool_calls: outcome.tool_calls,
        duplicate_tool_effects: meter.duplicate_effects() + duplicate_rows,
        duplicate_rows,
        tokens_billed: meter.tokens_billed,
        reference_tokens_billed: services.meter(&reference_id).tokens_billed,
        tokens_avoided,
        final_answer_matches: outcome.answer == reference.answer,
        notifications_sent: meter.notifications_sent(),
        notification_retries_deduplicated: meter.notification_retries_deduplicated,
        notification_responses_lost: meter.notification_responses_lost,
        search_retries_deduplicated: meter.search_retries_deduplicated,
        final_answer: outcome.answer,
        run_key: outcome.run_key,
        kept_store: (args.dir.is_some() || args.store.is_some()).then_some(store),
    })
}
