//! The model server and its client against each other: what each fault of the schedule looks
//! like from the client, and what the meter bills for it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::model_client::ModelClient;
use super::model_server::ModelServer;

const TIMEOUT: Duration = Duration::from_millis(250);

async fn server(dedup: bool, drop_pct: u64, slow_pct: u64) -> (ModelServer, ModelClient) {
    let server = ModelServer::start(7, dedup, drop_pct, slow_pct, 0)
        .await
        .unwrap();
    let client = ModelClient::new(&server.url(), TIMEOUT).unwrap();
    (server, client)
}

fn billed(server: &ModelServer) -> (u64, u64) {
    let m = &server.meter;
    (
        m.calls.load(Ordering::SeqCst),
        m.tokens.load(Ordering::SeqCst),
    )
}

#[tokio::test]
async fn an_answer_is_billed_once_and_seeded() {
    let (server, client) = server(false, 0, 0).await;
    let first = client.generate("a prompt", None).await.unwrap();
    let second = client.generate("a prompt", None).await.unwrap();
    assert!((180..300).contains(&first.tokens), "{first:?}");
    assert_eq!(
        first.tokens, second.tokens,
        "tokens depend on the seed and prompt"
    );
    assert!(first.text.contains("a prompt"), "{first:?}");
    server.settle().await;
    assert_eq!(billed(&server), (2, 2 * first.tokens));
}

#[tokio::test]
async fn a_dropped_connection_was_billed_and_says_so() {
    let (server, client) = server(false, 100, 0).await;
    let err = client.generate("a prompt", None).await.unwrap_err();
    assert!(err.contains("connection closed before a response"), "{err}");
    assert!(err.contains("may have billed"), "{err}");
    server.settle().await;
    assert_eq!(billed(&server).0, 1);
    assert_eq!(server.meter.dropped.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_slow_answer_times_out_and_still_bills_after_the_client_left() {
    let (server, client) = server(false, 0, 100).await;
    let err = client.generate("a prompt", None).await.unwrap_err();
    assert!(err.contains("timed out after 250ms"), "{err}");
    assert!(err.contains("may still bill"), "{err}");
    assert_eq!(
        billed(&server).0,
        0,
        "not billed yet when the client gives up"
    );
    server.settle().await;
    assert_eq!(billed(&server).0, 1);
    assert_eq!(server.meter.slow.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_idempotency_key_dedups_only_when_the_provider_does() {
    for (dedup, calls) in [(false, 2), (true, 1)] {
        let (server, client) = server(dedup, 0, 0).await;
        let a = client.generate("a prompt", Some("key-1")).await.unwrap();
        let b = client.generate("a prompt", Some("key-1")).await.unwrap();
        assert_eq!(a.tokens, b.tokens);
        server.settle().await;
        assert_eq!(billed(&server).0, calls, "dedup {dedup}");
        let deduplicated = server.meter.deduplicated.load(Ordering::SeqCst);
        assert_eq!(deduplicated, 2 - calls, "dedup {dedup}");
    }
}
