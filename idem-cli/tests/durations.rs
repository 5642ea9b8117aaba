//! The duration options of the `idem` binary take humantime's grammar (`1h30m`, `30s`,
//! `500ms`, `7d`) and refuse a bare number with a message asking for a unit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_idem");

fn idem(args: &[&str]) -> Output {
    Command::new(BIN)
        .env_remove("IDEM_STORE")
        .args(["--store", "memory:"])
        .args(args)
        .output()
        .expect("run idem")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn every_duration_option_takes_humantime() {
    for args in [
        &["--timeout", "1m30s", "list"][..],
        &["list", "--older-than", "1h30m"],
        &["list", "--newer-than", "500ms"],
        &["release", "--expired", "--older-than", "7d"],
        &["purge", "--abandoned-after", "2h 15m"],
    ] {
        let out = idem(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn a_bare_number_is_refused_with_a_hint() {
    for args in [
        &["--timeout", "10", "list"][..],
        &["list", "--older-than", "30"],
        &["release", "--expired", "--older-than", "30"],
        &["purge", "--abandoned-after", "3600"],
    ] {
        let out = idem(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let msg = stderr(&out);
        assert!(msg.contains("no unit: add one"), "{args:?}: {msg}");
    }
    let out = idem(&["list", "--older-than", "ten minutes"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a duration"), "{}", stderr(&out));
}
