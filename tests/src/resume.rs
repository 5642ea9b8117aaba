//! A 5-step pipeline process killed (SIGKILL) mid-step at each step in turn, restarted each
//! time: the finished steps replay from their records, the run resumes at the unfinished one,
//! and every step's effect happens exactly once. Shared by the SQLite and PostgreSQL
//! multi-process tests.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::takeover::spawn_started;

/// Runs the scenario with the `idem-test-worker` binary `worker` on the store at `url`.
pub async fn pipeline_resumes_where_it_was_killed(worker: &str, url: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("effects.txt");
    let out = out.to_str().expect("utf-8 path");
    let op = crate::unique_op("resume");
    for crash_at in 0..5 {
        let crash = crash_at.to_string();
        let mut child = spawn_started(worker, &["pipeline", url, &op, "run-1", out, &crash]).await;
        child.kill().await.expect("SIGKILL the pipeline");
        let effects = read_effects(out);
        let done: Vec<usize> = effects.keys().copied().collect();
        assert_eq!(
            done,
            (0..crash_at).collect::<Vec<_>>(),
            "killed in step {crash_at}: exactly the steps before it took effect"
        );
    }
    // The last run finds steps 0..3 done and runs step 4 only (after the killed attempts'
    // leases expire).
    let mut child = Command::new(worker)
        .args(["pipeline", url, &op, "run-1", out, "none"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the last run");
    let stdout = child.stdout.take().expect("piped stdout");
    let line = tokio::time::timeout(
        Duration::from_secs(60),
        BufReader::new(stdout).lines().next_line(),
    )
    .await
    .expect("the last run finishes within 60 s")
    .expect("read its stdout");
    assert_eq!(line.as_deref(), Some("done out0,out1,out2,out3,out4"));
    assert!(child.wait().await.expect("wait").success());
    let effects = read_effects(out);
    assert_eq!(
        effects.values().copied().collect::<Vec<_>>(),
        vec![1; 5],
        "each step took effect exactly once: {effects:?}"
    );
}

/// How many times each step took effect.
fn read_effects(path: &str) -> BTreeMap<usize, usize> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let step: usize = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad effect line {line:?}"));
        *counts.entry(step).or_insert(0) += 1;
    }
    counts
}
