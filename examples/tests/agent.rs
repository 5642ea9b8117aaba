//! Runs the agent example small and checks its last stdout line: killed three times with idem,
//! the run ends with the uncrashed run's answer, every tool effect once, and tokens avoided by
//! replays in idem's cost ledger; without idem, the same seeded kills duplicate tool effects
//! and re-bill tokens. The PostgreSQL run is skipped loudly when its server is unreachable (a
//! failure when `CI=true`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use serde_json::Value;

/// The example's exit status when the store's server is unreachable.
const EXIT_UNREACHABLE: i32 = 3;

/// Runs the example; `None` when the store's server is unreachable.
fn run(args: &[&str]) -> Option<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_agent"))
        .args(args)
        .output()
        .expect("run agent");
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.code() == Some(EXIT_UNREACHABLE) {
        return None;
    }
    assert!(
        out.status.success(),
        "agent {args:?} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .expect("a last line");
    Some(serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {last}")))
}

fn assert_exactly_once(v: &Value) {
    assert_eq!(v["idem"], true, "{v}");
    assert_eq!(v["crashes"], 3, "{v}");
    assert_eq!(v["runs"], 4, "{v}");
    assert_eq!(v["duplicate_tool_effects"], 0, "{v}");
    assert_eq!(v["final_answer_matches"], true, "{v}");
    assert_eq!(v["tool_calls"], 9, "{v}");
    // Every restart replayed at least the run's first model turn from its record.
    assert!(v["tokens_avoided"].as_f64().unwrap() > 0.0, "{v}");
    // One notification per notify call (every third call), though responses were lost.
    assert_eq!(v["notifications_sent"], 3, "{v}");
    assert!(
        v["notification_responses_lost"].as_u64().unwrap() > 0,
        "{v}"
    );
    assert!(
        v["notification_retries_deduplicated"].as_u64().unwrap()
            >= v["notification_responses_lost"].as_u64().unwrap(),
        "{v}"
    );
}

#[test]
fn a_killed_agent_resumes_with_every_tool_effect_once() {
    let v = run(&["--crashes", "3"]).expect("SQLite is always reachable");
    assert_exactly_once(&v);
}

#[test]
fn without_idem_the_same_kills_duplicate_tool_effects() {
    let v = run(&["--no-idem", "--crashes", "3"]).expect("no store to reach");
    assert_eq!(v["idem"], false, "{v}");
    assert_eq!(v["crashes"], 3, "{v}");
    assert!(v["duplicate_tool_effects"].as_u64().unwrap() > 0, "{v}");
    assert!(
        v["tokens_billed"].as_u64().unwrap() > v["reference_tokens_billed"].as_u64().unwrap(),
        "{v}"
    );
    assert_eq!(v["tokens_avoided"].as_f64().unwrap(), 0.0, "{v}");
    // Lost responses retried without a key: the service cannot tell, and sends again.
    assert!(v["notifications_sent"].as_u64().unwrap() > 3, "{v}");
}

#[test]
fn a_killed_agent_resumes_on_postgres() {
    let url = std::env::var("IDEM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    // A schema of its own: the run's records stay apart from other tests' tables.
    let sep = if url.contains('?') { '&' } else { '?' };
    let store = format!("{url}{sep}idem_schema=idem_agent_example");
    match run(&["--crashes", "3", "--store", &store]) {
        Some(v) => assert_exactly_once(&v),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("the PostgreSQL server is required (CI=true) but unreachable at {url}")
        }
        None => eprintln!(
            "\n*** SKIPPED: the agent example on PostgreSQL: the server at {url} is \
             unreachable; set IDEM_TEST_POSTGRES_URL or start PostgreSQL ***\n"
        ),
    }
}
