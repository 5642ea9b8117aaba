//! The `idem` binary against a real SQLite file and a real PostgreSQL database: every command,
//! `--json` and tables, and the error cases (bad URL, unknown key, unreachable store).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use idem_runtime::store::ClaimRequest;
use idem_runtime::{Call, Error, Idem, Key};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_idem");

fn idem(url: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .env_remove("IDEM_STORE")
        .arg("--store")
        .arg(url)
        .args(args)
        .output()
        .expect("run idem")
}

fn ok_json(url: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = idem(url, &all);
    assert!(
        out.status.success(),
        "idem {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON value")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A unique prefix for operation names, so runs sharing a PostgreSQL database never collide.
fn unique() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("cli{}_{nanos}", std::process::id())
}

#[derive(Debug)]
struct Fail(String);

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        Fail(e.to_string())
    }
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

struct Fixture {
    op_ok: String,
    op_fail: String,
    op_held: String,
    done: Vec<Key>,
    stuck: Key,
    live: Key,
}

/// Three completed keys, one failed, one running with an expired lease (its worker "crashed"),
/// one running with a live lease.
async fn populate(url: &str) -> Fixture {
    let tag = unique();
    let (op_ok, op_fail, op_held) = (
        format!("{tag}_draft"),
        format!("{tag}_notify"),
        format!("{tag}_held"),
    );
    let idem = Idem::open(url).await.unwrap();
    let mut done = Vec::new();
    for i in 0..3_u32 {
        let call = Call::new(op_ok.clone()).key(&("title", i));
        done.push(call.key_value());
        let v: u32 = idem
            .call(call, || async move { Ok::<_, Error>(i * 10) })
            .await
            .unwrap();
        assert_eq!(v, i * 10);
        // A replay, so the store sees a second call of the same key.
        let again: u32 = idem
            .call(Call::new(op_ok.clone()).key(&("title", i)), || async {
                Ok::<_, Error>(999)
            })
            .await
            .unwrap();
        assert_eq!(again, i * 10);
    }
    let failed: Result<u32, Fail> = idem
        .call(Call::new(op_fail.clone()).key(&"outbox-1"), || async {
            Err::<u32, Fail>(Fail("smtp relay refused the message".into()))
        })
        .await;
    assert!(failed.is_err());

    let store = idem.store();
    let stuck = Call::new(op_held.clone()).key(&"stuck").key_value();
    let live = Call::new(op_held.clone()).key(&"live").key_value();
    for (key, lease) in [
        (&stuck, Duration::from_millis(1)),
        (&live, Duration::from_secs(600)),
    ] {
        store
            .claim(&ClaimRequest {
                op: &op_held,
                key,
                fingerprint: None,
                lease,
                ttl: Duration::from_secs(3600),
                worker: "crashed-worker/42",
                parent: None,
            })
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    Fixture {
        op_ok,
        op_fail,
        op_held,
        done,
        stuck,
        live,
    }
}

async fn exercise(url: &str) {
    let f = populate(url).await;

    // list, filtered by op and by status, JSON and table.
    let rows = ok_json(url, &["list", "--op", &f.op_ok]);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows
        .iter()
        .all(|r| r["status"] == "completed" && r["attempt"] == 1));
    let failed = ok_json(url, &["list", "--op", &f.op_fail, "--status", "failed"]);
    assert_eq!(failed.as_array().unwrap().len(), 1);
    assert_eq!(failed[0]["error"], "smtp relay refused the message");
    let none = ok_json(url, &["list", "--op", &f.op_ok, "--older-than", "1h"]);
    assert_eq!(none.as_array().unwrap().len(), 0);
    let recent = ok_json(url, &["list", "--op", &f.op_ok, "--newer-than", "1h"]);
    assert_eq!(recent.as_array().unwrap().len(), 3);
    let stuck = ok_json(url, &["list", "--op", &f.op_held, "--stuck"]);
    assert_eq!(stuck.as_array().unwrap().len(), 1);
    assert_eq!(stuck[0]["key"], f.stuck.to_hex());
    let table = idem(url, &["list", "--op", &f.op_ok]);
    assert!(table.status.success());
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("completed") && text.contains(&f.done[0].short().to_string()));

    // show, by full key and by prefix, with its attempts.
    let shown = ok_json(url, &["show", &f.done[0].to_hex()]);
    assert_eq!(shown["op"], f.op_ok.as_str());
    assert_eq!(shown["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(shown["attempts"][0]["outcome"], "completed");
    let prefix = &f.done[1].to_hex()[..16];
    let by_prefix = ok_json(url, &["show", prefix]);
    assert_eq!(by_prefix["key"], f.done[1].to_hex());
    assert!(by_prefix["snapshot_bytes"].is_u64(), "{by_prefix}");
    let table = idem(url, &["show", &f.done[0].to_hex()]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("attempt") && text.contains("completed"),
        "{text}"
    );

    // list never reads snapshots: no snapshot size in listings (show has it).
    assert!(rows.iter().all(|r| r.get("snapshot_bytes").is_none()));
    assert!(shown["snapshot_bytes"].is_u64(), "{shown}");

    // stats, counted by the store: running, stuck (by the store's clock), completed.
    let held = ok_json(url, &["stats", "--op", &f.op_held]);
    assert_eq!(held["records"], 2, "{held}");
    assert_eq!(held["running"], 2, "{held}");
    assert_eq!(held["stuck"], 1, "{held}");
    assert_eq!(held["attempts"], 2, "{held}");
    assert_eq!(held["by_op"][&f.op_held]["stuck"], 1, "{held}");

    // forget of a running key with a live lease is refused (exit 4) and deletes nothing.
    let refused = idem(url, &["forget", &f.live.to_hex()]);
    assert_eq!(refused.status.code(), Some(4), "{}", stderr(&refused));
    let msg = stderr(&refused);
    assert!(msg.starts_with("idem: error: "), "{msg}");
    assert!(!msg.contains("idem: error: idem:"), "one prefix: {msg}");
    assert!(
        msg.contains("running") && msg.contains("--force") && msg.contains("release"),
        "{msg}"
    );
    assert_eq!(
        ok_json(url, &["show", &f.live.to_hex()])["status"],
        "running"
    );
    let json_refused = idem(url, &["--json", "forget", &f.live.to_hex()]);
    let v: Value = serde_json::from_slice(&json_refused.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "lease_live");

    // stats.
    let stats = ok_json(url, &["stats", "--op", &f.op_ok]);
    assert_eq!(stats["records"], 3);
    assert_eq!(stats["completed"], 3);
    assert_eq!(stats["reexecution_ratio"], 0.0);
    assert!(stats["replay_ratio"].is_null());
    let table = idem(url, &["stats"]);
    assert!(table.status.success(), "{}", stderr(&table));
    assert!(String::from_utf8_lossy(&table.stdout).contains("re-execution ratio"));

    // release: a live lease is refused without --force; --expired releases the stuck one only.
    let refused = idem(url, &["release", &f.live.to_hex()]);
    assert_eq!(refused.status.code(), Some(4), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("live lease"));
    let released = ok_json(url, &["release", "--expired", "--op", &f.op_held]);
    assert_eq!(released["released"], 1);
    assert_eq!(released["keys"][0]["key"], f.stuck.to_hex());
    let after = ok_json(url, &["show", &f.stuck.to_hex()]);
    assert_eq!(after["status"], "failed");
    let attempts = after["attempts"].as_array().unwrap();
    assert_eq!(attempts.last().unwrap()["outcome"], "released");
    let forced = ok_json(url, &["release", &f.live.to_hex(), "--force"]);
    assert_eq!(forced["released"], 1);
    let not_running = idem(url, &["release", &f.live.to_hex()]);
    assert_eq!(not_running.status.code(), Some(3));
    assert!(stderr(&not_running).contains("not running"));

    // forget, then the key is unknown.
    let forgot = ok_json(url, &["forget", &f.done[2].to_hex()]);
    assert_eq!(forgot["forgotten"], f.done[2].to_hex());
    let gone = idem(url, &["show", &f.done[2].to_hex()]);
    assert_eq!(gone.status.code(), Some(3));
    assert!(
        stderr(&gone).contains("no record for key"),
        "{}",
        stderr(&gone)
    );
    let gone = idem(url, &["forget", &f.done[2].to_hex()]);
    assert_eq!(gone.status.code(), Some(3));
    let json_err = idem(url, &["--json", "show", &f.done[2].to_hex()]);
    let v: Value = serde_json::from_slice(&json_err.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "not_found");

    // forget --force deletes even a running key with a live lease.
    let live = Call::new(f.op_held.clone()).key(&"live-again").key_value();
    Idem::open(url)
        .await
        .unwrap()
        .store()
        .claim(&ClaimRequest {
            op: &f.op_held,
            key: &live,
            fingerprint: None,
            lease: Duration::from_secs(600),
            ttl: Duration::from_secs(3600),
            worker: "busy-worker/7",
            parent: None,
        })
        .await
        .unwrap();
    assert_eq!(
        idem(url, &["forget", &live.to_hex()]).status.code(),
        Some(4)
    );
    let forced = ok_json(url, &["forget", "--force", &live.to_hex()]);
    assert_eq!(forced["forgotten"], live.to_hex());
    assert_eq!(idem(url, &["show", &live.to_hex()]).status.code(), Some(3));

    // malformed keys are usage errors.
    let bad = idem(url, &["show", "not-a-key"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("is not a key"));

    // purge runs (nothing here has expired yet).
    let purged = ok_json(url, &["purge"]);
    assert!(purged["purged"].is_u64());
    let still = ok_json(url, &["list", "--op", &f.op_ok]);
    assert_eq!(still.as_array().unwrap().len(), 2);

    // show: a streamed result's chunk count and preview.
    let streamed = Call::new(format!("{}_stream", f.op_ok)).key(&"prompt");
    let key = streamed.key_value();
    let handle = Idem::open(url).await.unwrap();
    let tokens = handle
        .stream(streamed, || async {
            let words = ["Hello", ", ", "world", "!"].map(|w| Ok::<_, Error>(w.to_owned()));
            Ok::<_, Error>(idem_runtime::Streamed::new(futures_util::stream::iter(
                words,
            )))
        })
        .await
        .unwrap();
    futures_util::StreamExt::for_each(tokens, |t| async move {
        t.unwrap();
    })
    .await;
    let shown = ok_json(url, &["show", &key.to_hex()]);
    assert_eq!(shown["stream"]["chunks"], 4, "{shown}");
    assert_eq!(shown["stream"]["preview"][2], "world", "{shown}");
    let table = idem(url, &["show", &key.to_hex()]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("stream:     4 chunks: Hello, world!"),
        "{text}"
    );
    let plain = ok_json(url, &["show", &f.done[1].to_hex()]);
    assert!(plain["stream"].is_null(), "{plain}");

    tree(url).await;
}

/// `show --tree`: a run's steps, nested, in order, with outcomes and attempts.
async fn tree(url: &str) {
    let tag = unique();
    let idem = Idem::open(url).await.unwrap();
    let run = Call::new(format!("{tag}_pipeline")).key(&"run-1");
    let root = run.key_value();
    let attempt = |fail: bool| {
        let idem = &idem;
        let tag = &tag;
        idem.call(
            Call::new(format!("{tag}_pipeline")).key(&"run-1"),
            move || async move {
                let draft: String = idem
                    .call(Call::new(format!("{tag}_draft")).by_position(), || async {
                        // A step with a step of its own.
                        let tokens: u32 = idem
                            .call(
                                Call::new(format!("{tag}_model_turn")).by_position(),
                                || async {
                                    if let Some(call) = idem_runtime::current() {
                                        call.add_cost("tokens", 42.0);
                                        call.add_cost("usd", 0.5);
                                    }
                                    Ok::<_, Fail>(42)
                                },
                            )
                            .await?;
                        Ok::<_, Fail>(format!("draft of {tokens} tokens"))
                    })
                    .await?;
                if fail {
                    return Err(Fail("the review service was down".into()));
                }
                idem.call(Call::new(format!("{tag}_review")).by_position(), || async {
                    Ok::<_, Fail>(draft.len())
                })
                .await
            },
        )
    };
    assert!(attempt(true).await.is_err());
    assert_eq!(attempt(false).await.unwrap(), "draft of 42 tokens".len());

    let shown = ok_json(url, &["show", &root.to_hex(), "--tree"]);
    assert_eq!(shown["op"], format!("{tag}_pipeline"), "{shown}");
    assert_eq!(shown["status"], "completed", "{shown}");
    assert_eq!(shown["attempts"], 2, "{shown}");
    let steps = shown["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{shown}");
    assert_eq!(steps[0]["op"], format!("{tag}_draft"));
    assert_eq!(steps[0]["position"], 0);
    assert_eq!(
        steps[0]["attempts"], 1,
        "replayed in the second run, not re-run"
    );
    assert_eq!(steps[0]["steps"][0]["op"], format!("{tag}_model_turn"));
    assert_eq!(steps[1]["op"], format!("{tag}_review"));
    assert_eq!(steps[1]["position"], 1);
    assert_eq!(steps[1]["parent"], root.to_hex());
    assert!(steps[1]["duration_ms"].is_u64(), "{shown}");

    let text = idem_text(url, &["show", &root.to_hex(), "--tree"]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].contains(&format!("{tag}_pipeline  completed")),
        "{text}"
    );
    assert!(lines[0].contains("2 attempts"), "{text}");
    assert!(
        lines[1].starts_with(&format!("├─ #0 {tag}_draft  completed")),
        "{text}"
    );
    assert!(
        lines[2].starts_with(&format!("│  └─ #0 {tag}_model_turn  completed")),
        "{text}"
    );
    assert!(
        lines[3].starts_with(&format!("└─ #1 {tag}_review  completed")),
        "{text}"
    );

    // The model turn was paid once (the second run replayed the draft step around it).
    let op = format!("{tag}_model_turn");
    let stats = ok_json(url, &["stats", "--op", &op]);
    let tokens = &stats["by_op"][&op]["costs"]["tokens"];
    assert_eq!(tokens["spent"], 42.0, "{stats}");
    assert_eq!(tokens["avoided"], 0.0, "{stats}");
    let costs = stats["costs"].as_array().unwrap();
    assert_eq!(costs.len(), 2, "{stats}");
    assert_eq!(costs[1]["unit"], "usd", "{stats}");
    let text = idem_text(url, &["stats", "--op", &op]);
    assert!(text.contains("avoided %"), "{text}");
}

fn idem_text(url: &str, args: &[&str]) -> String {
    let out = idem(url, args);
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("idem.db").display());
    exercise(&url).await;

    // IDEM_STORE works in place of --store.
    let out = Command::new(BIN)
        .env("IDEM_STORE", &url)
        .args(["--json", "stats"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn clear_errors() {
    let dir = tempfile::tempdir().unwrap();

    let bad_scheme = idem("mysql://localhost/db", &["list"]);
    assert_eq!(bad_scheme.status.code(), Some(2));
    assert!(
        stderr(&bad_scheme).contains("bad store URL"),
        "{}",
        stderr(&bad_scheme)
    );

    // No command creates a SQLite file: not the read-only ones, not those that write records.
    let missing = format!("sqlite://{}", dir.path().join("typo.db").display());
    for args in [
        &["list"][..],
        &["stats"],
        &["show", "abcd"],
        &["forget", "abcd"],
        &["purge"],
        &["release", "--expired"],
    ] {
        let out = idem(&missing, args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("no idem tables in"),
            "{}",
            stderr(&out)
        );
        assert!(
            !dir.path().join("typo.db").exists(),
            "{args:?}: a typo must not create a database"
        );
    }
    // A SQLite file without idem tables is left exactly as it was (no tables, no WAL switch).
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let out = idem(&format!("sqlite://{}", empty.display()), &["list"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no idem tables in"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0);
    assert!(!dir.path().join("empty.db-wal").exists());

    // An empty SQLite path is a usage error naming what to write.
    let out = idem("sqlite://", &["list"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("sqlite://path/to/idem.db"),
        "{}",
        stderr(&out)
    );

    let unreachable = idem(
        "postgres://postgres:secret@127.0.0.1:1/nowhere",
        &["--timeout", "5s", "list"],
    );
    assert_eq!(
        unreachable.status.code(),
        Some(1),
        "{}",
        stderr(&unreachable)
    );
    let msg = stderr(&unreachable);
    assert!(msg.contains("cannot open store"), "{msg}");
    assert!(
        msg.to_lowercase().contains("connection refused"),
        "the cause, not a timeout: {msg}"
    );
    assert!(
        !msg.contains("secret"),
        "the password must not be printed: {msg}"
    );
    // Passwords inside the password (`@`) and in query parameters are not printed either.
    let unreachable = idem(
        "postgres://postgres:se@cret@127.0.0.1:1/nowhere?Password=hunter2",
        &["list"],
    );
    let msg = stderr(&unreachable);
    assert!(
        !msg.contains("se@cret") && !msg.contains("cret") && !msg.contains("hunter2"),
        "{msg}"
    );

    let no_store = Command::new(BIN)
        .env_remove("IDEM_STORE")
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(no_store.status.code(), Some(2));
    assert!(stderr(&no_store).contains("no store given"));

    let bad_duration = idem("memory:", &["list", "--older-than", "ten minutes"]);
    assert_eq!(bad_duration.status.code(), Some(2));
}

/// `idem list | head -1`: a reader that closes the pipe early ends the command quietly (exit 0,
/// nothing on stderr), not with a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("idem.db").display());
    populate(&url).await;
    for args in [&["list"][..], &["--json", "list"], &["stats"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(BIN)
            .env_remove("IDEM_STORE")
            .arg("--store")
            .arg(&url)
            .args(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(out.stderr.is_empty(), "{args:?}: {}", stderr(&out));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_on_postgres() {
    let url = std::env::var("IDEM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let reachable = tokio::time::timeout(Duration::from_secs(10), Idem::open(&url)).await;
    if let Err(e) = reachable
        .map_err(|_| "timed out".to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("PostgreSQL at {url} is unreachable under CI=true: {e}");
        }
        eprintln!("\n!!!!!!!! SKIPPED cli_on_postgres: PostgreSQL at {url} is unreachable: {e} !!!!!!!!\n");
        return;
    }
    // A schema of its own: isolated from other runs, and always at this build's format.
    let schema = unique();
    let sep = if url.contains('?') { '&' } else { '?' };
    exercise(&format!("{url}{sep}idem_schema={schema}")).await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(&pool)
        .await;

    // A typo in `idem_schema` creates nothing, whatever the command.
    let typo = format!("{}_typo", unique());
    let typo_url = format!("{url}{sep}idem_schema={typo}");
    for args in [
        &["list"][..],
        &["stats"],
        &["show", "abcd"],
        &["forget", "abcd"],
        &["purge"],
    ] {
        let out = idem(&typo_url, args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("no idem tables in schema `{typo}`")),
            "{}",
            stderr(&out)
        );
        let created: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(&typo)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(!created, "{args:?} created the schema `{typo}`");
    }
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_on_redis() {
    let url =
        std::env::var("IDEM_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    // A prefix of its own: isolated from other runs (and from other tests on the server).
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let prefix = format!("idemt:{secs}:{}:", unique());
    let sep = if url.contains('?') { '&' } else { '?' };
    let store_url = format!("{url}{sep}idem_prefix={prefix}");
    let reachable = tokio::time::timeout(Duration::from_secs(10), Idem::open(&store_url)).await;
    if let Err(e) = reachable
        .map_err(|_| "timed out".to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
    {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("Redis at {url} is unreachable under CI=true: {e}");
        }
        eprintln!("\n!!!!!!!! SKIPPED cli_on_redis: Redis at {url} is unreachable: {e} !!!!!!!!\n");
        return;
    }
    exercise(&store_url).await;

    // A typo in `idem_prefix` creates nothing, whatever the command.
    let typo_url = format!("{url}{sep}idem_prefix=idemt:{secs}:typo{}:", unique());
    for args in [
        &["list"][..],
        &["stats"],
        &["show", "abcd"],
        &["forget", "abcd"],
        &["purge"],
    ] {
        let out = idem(&typo_url, args);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("no idem store under the key prefix"),
            "{}",
            stderr(&out)
        );
    }
}
