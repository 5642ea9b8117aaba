//! The parent process: runs the batch with idem, then without, under the same seeded faults,
//! each in its own application database, and collects both modes' figures.

use std::path::Path;

use anyhow::{bail, Context as _, Result};

use super::args::{Args, Mode};
use super::report::Figures;
use super::{mode_run, stream_run};

/// Both runs, for the report.
#[derive(Debug)]
pub(crate) struct Comparison {
    /// Each mode's figures, idem first.
    pub(crate) results: Vec<(Mode, Figures)>,
    /// The idem store's URL.
    pub(crate) store: String,
}

/// Runs every mode `args` asks for.
pub(crate) async fn run(args: &Args) -> Result<Comparison> {
    if args.inputs == 0 || args.workers == 0 || args.prompts == 0 {
        bail!("--inputs, --workers and --prompts must be at least 1");
    }
    if args.stream && args.crash_after.is_some() {
        bail!("--crash-after kills a worker process; --stream runs without them");
    }
    // Deleted when this returns, unless the reader asked to keep the databases (`--dir`).
    let temp;
    let dir: &Path = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d
        }
        None => {
            temp = tempfile::tempdir()?;
            temp.path()
        }
    };
    let store = match &args.store {
        Some(url) => url.clone(),
        None => format!("sqlite://{}", dir.join("idem.db").display()),
    };
    let modes: &[Mode] = if args.no_idem {
        &[Mode::Plain]
    } else {
        &[Mode::Idem, Mode::Plain]
    };
    // A fresh key space for each run of the example, so a kept store replays nothing old.
    let batch = format!(
        "batch-{}-{}",
        args.seed,
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );

    eprintln!(
        "ai_pipeline: {}; idem store {}; databases in {}",
        args.describe(),
        if args.no_idem { "-" } else { &store },
        dir.display()
    );
    let mut results = Vec::new();
    for &mode in modes {
        let figures = if args.stream {
            stream_run::run(args, mode, &store, &batch).await?
        } else {
            mode_run::run(args, mode, dir, &store, &batch).await?
        };
        results.push((mode, figures));
    }
    Ok(Comparison { results, store })
}
