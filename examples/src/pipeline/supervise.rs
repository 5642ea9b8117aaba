//! Worker processes: starting one, reading its summary, and restarting it once if it crashed
//! (only worker 0 may, with `--crash-after`), so a crash is a real process death.

use std::process::Stdio;

use anyhow::{bail, Context as _, Result};
use indicatif::ProgressBar;
use tokio::io::AsyncReadExt;

use super::queue::WorkerSummary;

/// One worker process to run to completion.
#[derive(Debug)]
pub(crate) struct Supervised {
    /// Its index (for messages).
    pub(crate) index: usize,
    /// Its flags, without `--crash-after`.
    pub(crate) flags: Vec<String>,
    /// Where it dies on its first run.
    pub(crate) crash_after: Option<u64>,
}

impl Supervised {
    /// Runs the worker; if it crashes, restarts it without the crash. Returns its summary and
    /// how many times it crashed.
    pub(crate) async fn run_to_completion(self, bar: ProgressBar) -> Result<(WorkerSummary, u64)> {
        let exe = std::env::current_exe()?;
        let mut crashes = 0;
        let mut crash_next = self.crash_after;
        loop {
            let mut cmd = tokio::process::Command::new(&exe);
            cmd.args(&self.flags)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true);
            if let Some(n) = crash_next {
                cmd.args(["--crash-after", &n.to_string()]);
            }
            let mut child = cmd.spawn().context("starting a worker process")?;
            let mut out = String::new();
            if let Some(mut stdout) = child.stdout.take() {
                stdout.read_to_string(&mut out).await?;
            }
            let status = child.wait().await?;
            if status.success() {
                let line = out.lines().next_back().unwrap_or_default();
                let summary: WorkerSummary = serde_json::from_str(line)
                    .with_context(|| format!("a worker printed no summary: {out:?}"))?;
                return Ok((summary, crashes));
            }
            if crash_next.is_none() {
                bail!("a worker process failed: {status}");
            }
            crashes += 1;
            crash_next = None;
            bar.suspend(|| {
                eprintln!(
                    "worker {} died ({status}); restarting it: finished steps replay from the store",
                    self.index
                );
            });
        }
    }
}
