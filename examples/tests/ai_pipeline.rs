//! Runs the example end to end (short mode) and checks its last stdout line: under the same
//! seeded faults, zero duplicate rows and notifications with idem, more than zero without.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use serde_json::Value;

fn run(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_ai_pipeline"))
        .args(args)
        .output()
        .expect("run ai_pipeline");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ai_pipeline {args:?} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .expect("a last line");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

fn assert_contrast(v: &Value, inputs: u64) {
    assert_eq!(v["idem"], true);
    assert_eq!(v["inputs"], inputs);
    assert_eq!(v["duplicate_rows"], 0, "{v}");
    assert_eq!(v["duplicate_notifications"], 0, "{v}");
    assert_eq!(v["finished"], inputs, "{v}");
    let plain = &v["without_idem"];
    assert!(plain["duplicate_rows"].as_i64().unwrap() > 0, "{v}");
    assert!(
        plain["duplicate_notifications"].as_i64().unwrap() > 0,
        "{v}"
    );
    assert!(
        plain["tokens_billed"].as_u64().unwrap() > v["tokens_billed"].as_u64().unwrap(),
        "{v}"
    );
    assert!(v["model_calls"].as_u64().unwrap() >= inputs);
}

#[test]
fn idem_removes_the_duplicates_that_plain_retries_make() {
    let v = run(&["--inputs", "12"]);
    assert_contrast(&v, 12);
}

#[test]
fn a_crashed_worker_resumes_from_snapshots() {
    let v = run(&["--inputs", "12", "--crash-after", "10"]);
    assert_eq!(v["crashes"], 1, "{v}");
    assert_contrast(&v, 12);
}

#[test]
fn streamed_drafts_attach_with_idem_and_generate_twice_without() {
    let v = run(&["--stream", "--prompts", "12", "--duplicate-pct", "50"]);
    assert_eq!(v["idem"], true);
    assert_eq!(v["inputs"], 12);
    assert_eq!(v["failed_inputs"], 0, "{v}");
    assert_eq!(v["duplicate_generations"], 0, "{v}");
    assert!(v["attached_streams"].as_u64().unwrap() > 0, "{v}");
    assert!(v["streams"].as_u64().unwrap() >= 12, "{v}");
    let plain = &v["without_idem"];
    assert!(plain["duplicate_generations"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(plain["attached_streams"], 0, "{v}");
    assert!(
        plain["stream_tokens_billed"].as_u64().unwrap()
            > v["stream_tokens_billed"].as_u64().unwrap(),
        "{v}"
    );
}
