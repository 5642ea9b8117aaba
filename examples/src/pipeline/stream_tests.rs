//! The streaming endpoint and its client against each other (tokens round-trip, a broken-off
//! stream is billed and ends in an error), the SSE parser on awkward reads, and `--stream` run
//! with idem and without.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use futures_util::StreamExt;

use super::args::{Args, Mode};
use super::model_server::ModelServer;
use super::sse::SseParser;
use super::stream_client::StreamClient;

async fn server(stream_drop_pct: u64) -> (ModelServer, StreamClient) {
    let server = ModelServer::start(7, false, 0, 0, stream_drop_pct)
        .await
        .unwrap();
    let client = StreamClient::new(&server.url(), Duration::from_millis(500)).unwrap();
    (server, client)
}

async fn read_all(client: &StreamClient, prompt: &str) -> Vec<Result<String, String>> {
    let tokens = client.stream(prompt, "test").await.unwrap();
    tokens.map(|t| t.map(|t| t.text)).collect().await
}

#[tokio::test]
async fn tokens_round_trip_and_each_is_billed() {
    let (server, client) = server(0).await;
    let first = read_all(&client, "a prompt").await;
    let tokens: Vec<String> = first.into_iter().map(Result::unwrap).collect();
    assert!((40..80).contains(&tokens.len()), "{tokens:?}");
    let again: Vec<String> = read_all(&client, "a prompt")
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(tokens, again, "the same prompt streams the same tokens");
    let meter = &server.streams;
    assert_eq!(meter.generations.load(Ordering::SeqCst), 2);
    assert_eq!(meter.tokens.load(Ordering::SeqCst), 2 * tokens.len() as u64);
    assert_eq!(
        meter.duplicate_generations(),
        1,
        "the second one delivered it again"
    );
    assert!(meter.generated_for("a prompt", "test"));
    assert!(!meter.generated_for("a prompt", "someone else"));
}

#[tokio::test]
async fn a_broken_off_stream_ends_in_an_error_after_its_billed_tokens() {
    let (server, client) = server(100).await;
    let mut items = read_all(&client, "a prompt").await;
    let last = items.pop().unwrap().unwrap_err();
    assert!(last.contains("broken off after"), "{last}");
    assert!(last.contains("without [DONE]"), "{last}");
    assert!(
        !items.is_empty(),
        "a stream breaks off after its first token"
    );
    assert!(items.iter().all(Result::is_ok), "{items:?}");
    let meter = &server.streams;
    assert_eq!(meter.dropped.load(Ordering::SeqCst), 1);
    // Billed as sent: a token still in flight when the connection closed is billed too, and
    // the client never sees it.
    let billed = meter.tokens.load(Ordering::SeqCst);
    assert!(billed >= items.len() as u64, "{billed} {items:?}");
    assert_eq!(
        meter.duplicate_generations(),
        0,
        "a retry after a drop is no duplicate"
    );
}

#[test]
fn the_parser_joins_events_split_across_reads() {
    let mut parser = SseParser::default();
    let body = "data: {\"token\":\" é\"}\n\n: a comment\n\ndata: [DONE]\r\n\r\n";
    let bytes = body.as_bytes();
    let mut events = Vec::new();
    // One byte at a time: splits inside the blank line and inside the two-byte character.
    for b in bytes {
        events.extend(parser.push(std::slice::from_ref(b)));
    }
    assert_eq!(events, ["{\"token\":\" é\"}", "[DONE]"]);
}

#[tokio::test]
async fn with_idem_a_duplicate_attaches_and_without_it_generates_again() {
    let args = Args::parse_from([
        "ai_pipeline",
        "--stream",
        "--prompts",
        "12",
        "--duplicate-pct",
        "50",
    ]);
    let comparison = super::compare::run(&args).await.unwrap();
    let figures = |mode: Mode| {
        let (_, f) = comparison.results.iter().find(|(m, _)| *m == mode).unwrap();
        (f.clone(), f.stream.clone().unwrap())
    };
    let (with, with_stream) = figures(Mode::Idem);
    let (without, without_stream) = figures(Mode::Plain);
    assert_eq!(with.failed, 0, "{with:?}");
    assert_eq!(without.failed, 0, "{without:?}");
    assert!(with_stream.duplicate_requests > 0, "{with_stream:?}");
    assert_eq!(with_stream.duplicate_generations, 0, "{with_stream:?}");
    assert!(with_stream.attached_streams > 0, "{with_stream:?}");
    assert!(
        without_stream.duplicate_generations > 0,
        "{without_stream:?}"
    );
    assert_eq!(without_stream.attached_streams, 0, "{without_stream:?}");
    assert!(
        without_stream.stream_tokens_billed > with_stream.stream_tokens_billed,
        "{with_stream:?} {without_stream:?}"
    );
}
