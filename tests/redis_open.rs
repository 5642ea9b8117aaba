//! Bad input when opening a Redis store is a typed error, before anything is written: a wrong
//! URL, a bad key prefix, a server that wants a password the URL lacks (or refuses it), an
//! unreachable server (fast), and `open_existing` on a prefix with no store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use idem_runtime::store::redis::RedisStore;
use idem_runtime::Error;
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
