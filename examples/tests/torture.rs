//! Runs the torture harness with a small count on SQLite, and on PostgreSQL when its server is
//! reachable (skipped loudly when not, a failure when `CI=true`), and checks the zeros of its
//! JSON line: no duplicate, lost or orphaned rows after SIGKILLs at random points of steps.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use serde_json::Value;

/// The harness's exit status when the store's server is unreachable.
const EXIT_UNREACHABLE: i32 = 3;

/// Runs the harness on `store`; `None` when its server is unreachable.
fn run(store: &str) -> Option<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_torture"))
        .args(["--store", store, "--kills", "10", "--keys", "100"])
        .args(["--timeout-secs", "60"])
        .output()
        .expect("run torture");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(EXIT_UNREACHABLE) {
        return None;
    }
    assert!(
        out.status.success(),
        "torture --store {store} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .expect("a last line");
    Some(serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {last}")))
}

fn assert_exactly_once(v: &Value, store: &str) {
    assert_eq!(v["store"], store, "{v}");
    assert_eq!(v["kills"], 10, "{v}");
    assert_eq!(v["keys"], 100, "{v}");
    assert_eq!(v["duplicates"], 0, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["orphans"], 0, "{v}");
    assert_eq!(v["unfinished"], 0, "{v}");
    assert_eq!(v["completed"], 100, "{v}");
    // Every key's rows are there: at least one row per key.
    assert!(v["rows"].as_u64().unwrap() >= 100, "{v}");
}

#[test]
fn sqlite_steps_commit_exactly_once_under_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("torture.db").display());
    let v = run(&store).expect("SQLite is always reachable");
    assert_exactly_once(&v, "sqlite");
}

/// The negative control: rows written outside the step's transaction (check, write, then
/// record) must show up as duplicates or orphans, and fail the run. Without it the zeros above
/// could come from a check that sees nothing.
#[test]
fn writes_outside_the_step_transaction_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("torture.db").display());
    let out = Command::new(env!("CARGO_BIN_EXE_torture"))
        .args(["--store", &store, "--kills", "20", "--keys", "100"])
        .args(["--timeout-secs", "60", "--outside-tx"])
        .output()
        .expect("run torture");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "stdout:\n{stdout}");
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap();
    let v: Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["outside_tx"], true, "{v}");
    let caught = v["duplicates"].as_u64().unwrap() + v["orphans"].as_u64().unwrap();
    assert!(caught > 0, "{v}");
}

#[test]
fn postgres_steps_commit_exactly_once_under_sigkill() {
    let url = std::env::var("IDEM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    match run(&url) {
        Some(v) => assert_exactly_once(&v, "postgres"),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("the PostgreSQL server is required (CI=true) but unreachable at {url}")
        }
        None => eprintln!(
            "\n*** SKIPPED: torture on PostgreSQL: the server at {url} is unreachable; \
             set IDEM_TEST_POSTGRES_URL or start PostgreSQL ***\n"
        ),
    }
}
