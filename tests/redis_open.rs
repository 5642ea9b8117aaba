//! Bad input when opening a Redis store is a typed error, before anything is written: a wrong
//! URL, a bad key prefix, a server that wants a password the URL lacks (or refuses it), an
//! unreachable server (fast), `open_existing` on a prefix with no store, and a format newer than
//! the build's. A format-1 store (an older build's) is upgraded on open, and its records keep
//! working.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use idem_runtime::record::{AttemptOutcome, SnapshotKind};
use idem_runtime::store::redis::RedisStore;
use idem_runtime::store::{AttemptRef, Fence, Outcome};
use idem_runtime::{Call, Error, Idem, Key, Store};
use idem_tests::backends::{fresh_redis_prefix, redis_store_at, redis_url};
use idem_tests::redis_server::RedisServer;

fn open_reason(r: Result<RedisStore, Error>) -> String {
    match r {
        Err(e @ Error::Open { .. }) => e.to_string(),
        other => panic!("expected Error::Open, got {other:?}"),
    }
}

#[tokio::test]
async fn wrong_urls_are_open_errors() {
    for (url, says) in [
        ("redis://", "no host"),
        ("redis://127.0.0.1:notaport", "not a valid URL"),
        ("http://127.0.0.1:6379", "redis://"),
        (
            "redis://127.0.0.1:6379?idem_prefx=a",
            "unknown store option",
        ),
        (
            "redis://127.0.0.1:6379?idem_connections=many",
            "expected a number",
        ),
        (
            "redis://127.0.0.1:6379?idem_cluster=maybe",
            "expected true or false",
        ),
    ] {
        let text = open_reason(RedisStore::open(url).await);
        assert!(text.contains(says), "{url}: {text}");
    }
    #[cfg(not(feature = "redis-tls"))]
    {
        let text = open_reason(RedisStore::open("rediss://127.0.0.1:6380").await);
        assert!(text.contains("redis-tls"), "{text}");
    }
}

#[tokio::test]
async fn bad_prefixes_are_config_errors_before_connecting() {
    // Port 1: nothing listens, so only a check made before connecting can answer Config.
    for prefix in ["", "a{b}:", "has space", "glob*", &"p".repeat(65)] {
        let r = RedisStore::builder("redis://127.0.0.1:1")
            .prefix(prefix)
            .open()
            .await;
        assert!(matches!(r, Err(Error::Config(_))), "{prefix:?}: {r:?}");
    }
    let r = RedisStore::open("redis://127.0.0.1:1?idem_prefix=%7Bx%7D").await;
    assert!(matches!(r, Err(Error::Config(_))), "{r:?}");
}

#[tokio::test]
async fn an_unreachable_server_fails_fast_with_its_cause() {
    let begun = Instant::now();
    let text = open_reason(RedisStore::open("redis://:hunter2@127.0.0.1:1").await);
    assert!(
        begun.elapsed() < Duration::from_secs(3),
        "{:?}",
        begun.elapsed()
    );
    assert!(text.contains("cannot connect"), "{text}");
    assert!(
        !text.contains("hunter2"),
        "the password is redacted: {text}"
    );
}

#[tokio::test]
async fn a_password_the_url_lacks_or_gets_wrong_is_an_open_error() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = RedisServer::start(dir.path(), &["--requirepass", "s3cret"]) else {
        return;
    };
    let port = server.port();
    let text = open_reason(RedisStore::open(&server.url()).await);
    assert!(text.contains("requires a password"), "{text}");
    let text = open_reason(RedisStore::open(&format!("redis://:wrong@127.0.0.1:{port}")).await);
    assert!(text.contains("refused"), "{text}");
    assert!(!text.contains("wrong@"), "the password is redacted: {text}");
    let store = RedisStore::open(&format!("redis://:s3cret@127.0.0.1:{port}"))
        .await
        .unwrap();
    assert_eq!(store.prefix(), "idem:");
}

#[tokio::test]
async fn open_existing_refuses_a_prefix_without_a_store() {
    let url = redis_url();
    let prefix = fresh_redis_prefix();
    // Skips (loudly) when the shared server is unreachable.
    if redis_store_at(&url, |b| b.prefix(&fresh_redis_prefix()))
        .await
        .is_none()
    {
        return;
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    let with_prefix = format!("{url}{sep}idem_prefix={prefix}");
    match idem_runtime::store::open_existing(&with_prefix).await {
        Err(e @ Error::Open { .. }) => assert!(e.to_string().contains("no idem store"), "{e}"),
        other => panic!("expected Error::Open, got {other:?}"),
    }
    // Once created, it opens.
    idem_runtime::store::open(&with_prefix).await.unwrap();
    idem_runtime::store::open_existing(&with_prefix)
        .await
        .unwrap();
}

/// The record hash and group counter names of `key` under `prefix` (the format's layout).
fn redis_names(prefix: &str, key: &Key) -> (String, String) {
    let hex = key.to_hex();
    let group = &hex[..4];
    (
        format!("{prefix}{{{group}}}:{hex}"),
        format!("{prefix}{{{group}}}:floor"),
    )
}

/// A store a format-1 build wrote: opening it with `create` upgrades the marker to 2 (a
/// read-only open reads it as it is), and its records keep working. A format-1 running record
/// whose lease ended is taken over above its number, its log line ending `abandoned`; a live
/// one completes under this build, ending its log line and lifting the group's counter to its
/// number (format 1 numbered records above it), so the key never gets that number again.
#[tokio::test]
async fn a_format_1_store_is_upgraded_and_its_records_keep_working() {
    let url = redis_url();
    // Skips (loudly) when the shared server is unreachable.
    if redis_store_at(&url, |b| b.prefix(&fresh_redis_prefix()))
        .await
        .is_none()
    {
        return;
    }
    let prefix = fresh_redis_prefix();
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let op = "format1.op".to_owned();
    let key_of = |name: &str| Call::new(op.clone()).key(&name).key_value();
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await.unwrap();
    let now = secs * 1000 + micros / 1000;
    let format_key = format!("{prefix}format");
    let set = |k: &str, v: &str| redis::cmd("SET").arg(k).arg(v).clone();
    set(&format_key, "1")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    // `a`: its worker vanished (the lease ended a second ago); `b`: still running. Both are
    // numbered above their group's floor, as format 1 allowed.
    for (name, attempt, lease) in [("a", 5, now - 1000), ("b", 7, now + 60_000)] {
        let (record, floor) = redis_names(&prefix, &key_of(name));
        redis::cmd("HSET")
            .arg(&record)
            .arg(&[
                ("op", op.clone()),
                ("status", "running".into()),
                ("attempt", attempt.to_string()),
                ("lease", lease.to_string()),
                ("worker", "old".into()),
                ("created", now.to_string()),
                ("updated", now.to_string()),
            ])
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
        let line = format!(r#"{{"a":{attempt},"w":"old","s":{now},"o":"running"}}"#);
        redis::cmd("RPUSH")
            .arg(format!("{record}:log"))
            .arg(line)
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
        set(&floor, "3").query_async::<()>(&mut conn).await.unwrap();
    }
    let marker = |mut conn: redis::aio::MultiplexedConnection| {
        let format_key = format_key.clone();
        async move {
            redis::cmd("GET")
                .arg(&format_key)
                .query_async::<String>(&mut conn)
                .await
                .unwrap()
        }
    };

    let read_only = RedisStore::builder(&url)
        .prefix(&prefix)
        .create(false)
        .open()
        .await
        .unwrap();
    let log = read_only.attempts(&key_of("a")).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].attempt, log[0].outcome),
        (5, AttemptOutcome::Running)
    );
    assert_eq!(
        marker(conn.clone()).await,
        "1",
        "a read-only open writes nothing"
    );

    let store = RedisStore::builder(&url)
        .prefix(&prefix)
        .open()
        .await
        .unwrap();
    assert_eq!(marker(conn.clone()).await, "2");
    let idem = Idem::builder(Arc::new(store.clone()))
        .cache_capacity(0)
        .worker("new")
        .build();

    let v = idem
        .call(Call::new(op.clone()).key(&"a"), || async {
            Ok::<_, Error>("fresh".to_owned())
        })
        .await
        .unwrap();
    assert_eq!(v, "fresh");
    let a = idem.record(&key_of("a")).await.unwrap().unwrap();
    assert!(
        a.attempt > 5,
        "taken over above format 1's number: {}",
        a.attempt
    );
    let log = idem.attempts(&key_of("a")).await.unwrap();
    let lines: Vec<_> = log
        .iter()
        .map(|l| (l.attempt, l.outcome, l.worker.as_str()))
        .collect();
    assert_eq!(
        lines,
        [
            (5, AttemptOutcome::Abandoned, "old"),
            (a.attempt, AttemptOutcome::Completed, "new")
        ]
    );

    let b = key_of("b");
    let owned = store
        .complete(
            &AttemptRef {
                op: &op,
                key: &b,
                attempt: 7,
            },
            Outcome::Snapshot {
                kind: SnapshotKind::Ok,
                bytes: br#""done""#,
                ttl: Duration::from_secs(3600),
                cost: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(owned, Fence::Owned);
    let log = idem.attempts(&b).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].attempt, log[0].outcome),
        (7, AttemptOutcome::Completed)
    );
    assert!(log[0].ended_at.is_some());
    let (_, floor) = redis_names(&prefix, &b);
    let counter: u64 = redis::cmd("GET")
        .arg(&floor)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        counter >= 7,
        "the group's counter covers attempt 7: {counter}"
    );
    assert!(store.forget(&b, false).await.unwrap());
    idem.call(Call::new(op.clone()).key(&"b"), || async {
        Ok::<_, Error>("again".to_owned())
    })
    .await
    .unwrap();
    let again = idem.record(&b).await.unwrap().unwrap();
    assert!(again.attempt > 7, "{}", again.attempt);
}

/// A marker of a format this build does not know (a newer build's) refuses to open, saying what
/// it found and what to do.
#[tokio::test]
async fn a_newer_format_is_an_open_error() {
    let url = redis_url();
    let prefix = fresh_redis_prefix();
    if redis_store_at(&url, |b| b.prefix(&prefix)).await.is_none() {
        return;
    }
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("SET")
        .arg(format!("{prefix}format"))
        .arg("3")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let text = open_reason(RedisStore::builder(&url).prefix(&prefix).open().await);
    assert!(
        text.contains("format 3") && text.contains("upgrade idem"),
        "{text}"
    );
}
