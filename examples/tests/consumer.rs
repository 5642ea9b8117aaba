//! Runs the consumer example small on both brokers (skipped loudly when one is unreachable, a
//! failure when `CI=true`): with idem, after re-published duplicates, ack-wait redeliveries and
//! a SIGKILLed consumer, every message has exactly one effect; without idem the duplicates show.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use serde_json::Value;

const EXIT_UNREACHABLE: i32 = 3;

fn servers_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn run(broker: &str, extra: &[&str]) -> Option<Value> {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("consumer.db").display());
    let out = Command::new(env!("CARGO_BIN_EXE_consumer"))
        .args(["--broker", broker, "--store", &store, "--messages", "120"])
        .args(extra)
        .output()
        .expect("run consumer");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(EXIT_UNREACHABLE) {
        assert!(
            !servers_required(),
            "{broker} unreachable under CI=true:\n{stderr}"
        );
        eprintln!("\n*** SKIPPED: {broker} unreachable ***\n");
        return None;
    }
    assert!(
        out.status.success(),
        "consumer failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap();
    Some(serde_json::from_str(last).unwrap())
}

fn check(v: &Value, broker: &str) {
    assert_eq!(v["broker"], broker, "{v}");
    assert_eq!(v["unique"], 120, "{v}");
    assert_eq!(v["published"], 132, "{v}");
    assert_eq!(v["killed"], 1, "{v}");
    assert_eq!(v["missing"], 0, "{v}");
    assert_eq!(v["duplicate_side_effects"], 0, "{v}");
    assert_eq!(v["side_effects"], 120, "{v}");
    assert!(
        v["deliveries"].as_u64().unwrap() >= 132,
        "duplicates delivered: {v}"
    );
}

fn nats_url() -> String {
    std::env::var("IDEM_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

fn amqp_url() -> String {
    std::env::var("IDEM_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

#[test]
fn nats_with_idem_has_no_duplicate_side_effects() {
    if let Some(v) = run(&nats_url(), &[]) {
        check(&v, "nats");
    }
}

#[test]
fn amqp_with_idem_has_no_duplicate_side_effects() {
    if let Some(v) = run(&amqp_url(), &[]) {
        check(&v, "amqp");
    }
}

#[test]
fn group_commit_has_no_duplicate_side_effects() {
    // Groups of up to 8 messages per transaction, through the same duplicates, redeliveries and
    // SIGKILL: still one effect per message.
    for (url, broker) in [(nats_url(), "nats"), (amqp_url(), "amqp")] {
        if let Some(v) = run(&url, &["--group", "8"]) {
            check(&v, broker);
            assert_eq!(v["group"], 8, "{v}");
        }
    }
}

#[test]
fn without_idem_the_duplicates_show() {
    if let Some(v) = run(&nats_url(), &["--no-idem", "--no-kill"]) {
        assert_eq!(v["missing"], 0, "{v}");
        assert!(v["duplicate_side_effects"].as_u64().unwrap() >= 12, "{v}");
    }
}
