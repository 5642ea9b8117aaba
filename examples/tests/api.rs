//! Runs the `api` example (server and its self-driving client) and checks its JSON line: every
//! draft generated exactly once, whatever the clients did.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use serde_json::Value;

fn run(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_api"))
        .args(args)
        .output()
        .expect("run api");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "api {args:?} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .expect("a last line");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

#[test]
fn every_draft_is_generated_once() {
    let drafts = 40;
    let v = run(&["--drafts", "40"]);
    assert_eq!(v["duplicate_executions"], 0, "{v}");
    assert_eq!(v["executions"], drafts, "one execution per key: {v}");
    assert_eq!(v["model_calls_billed"], drafts, "{v}");
    assert_eq!(v["missing_400"], drafts, "{v}");
    assert_eq!(v["mismatches_422"], drafts / 4, "{v}");
    assert_eq!(v["inconsistent_replays"], 0, "{v}");
    assert_eq!(v["unexpected_statuses"], 0, "{v}");
    assert!(v["replays"].as_u64().unwrap() >= drafts, "{v}");
    assert!(v["lost_responses"].as_u64().unwrap() > 0, "{v}");
    assert!(v["conflicts_409"].as_u64().unwrap() > 0, "{v}");
    let requests = v["requests"].as_u64().unwrap();
    let answered = [
        "first_responses",
        "replays",
        "conflicts_409",
        "mismatches_422",
        "missing_400",
        "lost_responses",
    ]
    .iter()
    .map(|k| v[k].as_u64().unwrap())
    .sum::<u64>();
    assert_eq!(requests, answered, "every request is counted once: {v}");
}
