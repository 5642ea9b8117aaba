//! The supervisor: runs the agent as a child process, SIGKILLs it when it reports reaching the
//! step chosen for this life, and restarts it, until one life runs to the answer.

use std::process::Stdio;

use anyhow::{bail, Context as _, Result};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::crash::MARK;
use super::run::Outcome;
use idem_examples::seeded::chance;

/// The steps at which the successive lives of the agent are killed: `crashes` distinct steps
/// of the `steps` a run makes, in increasing order (seeded). Increasing, so every life gets
/// further than the last, with idem or without (a plain agent starts over and must reach it
/// again).
pub(crate) fn kill_points(seed: u64, steps: u64, crashes: u64) -> Vec<u64> {
    let mut all: Vec<u64> = (0..steps).collect();
    all.sort_by_key(|i| chance(seed, &["kill", &i.to_string()]));
    all.truncate(usize::try_from(crashes).unwrap_or(usize::MAX));
    all.sort_unstable();
    all
}

/// Runs the agent with `flags` until a life completes, killing life `i` at step `kills[i]`.
/// Returns the outcome and how many lives were killed.
pub(crate) async fn run_to_completion(flags: &[String], kills: &[u64]) -> Result<(Outcome, u64)> {
    let exe = std::env::current_exe()?;
    let mut crashes = 0u64;
    loop {
        let stop_at = usize::try_from(crashes).ok().and_then(|i| kills.get(i));
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(step) = stop_at {
            cmd.args(["--stop-at", &step.to_string()]);
        }
        let mut child = cmd.spawn().context("starting the agent process")?;
        let stdout = child.stdout.take().context("the agent's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut last = String::new();
        let mut killed = false;
        while let Some(line) = lines.next_line().await? {
            if line.starts_with(MARK) {
                // SIGKILL, no chance to clean up: whatever the step did is done, its result
                // is not recorded, an open transaction is left to the database to roll back.
                child.kill().await?;
                eprintln!("supervisor: SIGKILLed the agent at {line:?}; restarting it");
                killed = true;
                break;
            }
            last = line;
        }
        if killed {
            crashes += 1;
            continue;
        }
        let status = child.wait().await?;
        if !status.success() {
            bail!("the agent process failed ({status}); last line: {last}");
        }
        let outcome: Outcome = serde_json::from_str(&last)
            .with_context(|| format!("the agent printed no outcome: {last:?}"))?;
        return Ok((outcome, crashes));
    }
}
