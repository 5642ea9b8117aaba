//! Conformance scenarios for streamed results (`Idem::stream`): one generation per key, replay in
//! order (paged, and from the cache), a duplicate following a live stream, errors part-way, a
//! dropped stream, a dead generating attempt, and chunks that cannot be kept. Run on every store
//! by `conformance_suite!`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{stream, StreamExt};
use idem_runtime::record::{AttemptOutcome, Status};
use idem_runtime::{Call, Error, StreamOptions, Streamed};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::backends::Backend;
use crate::unique_op;

/// The error type of the streams under test: recordable, so `cache_errors` can keep it.
#[derive(Debug, Serialize, Deserialize)]
pub enum StreamError {
    /// From idem (never recorded).
    Idem(Error),
    /// From the model.
    Model(String),
}

/// Model errors compare by text; idem's never compare equal.
impl PartialEq for StreamError {
    fn eq(&self, other: &Self) -> bool {
        matches!((self, other), (StreamError::Model(a), StreamError::Model(b)) if a == b)
    }
}

impl From<Error> for StreamError {
    fn from(e: Error) -> Self {
        StreamError::Idem(e)
    }
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::Idem(e) => write!(f, "{e}"),
            StreamError::Model(e) => write!(f, "model failed: {e}"),
        }
    }
}

impl StreamError {
    /// idem's own error inside, if any.
    fn idem(&self) -> Option<&Error> {
        match self {
            StreamError::Idem(e) => Some(e),
            StreamError::Model(_) => None,
        }
    }
}

type Tokens = Streamed<String, StreamError>;

fn tokens(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("tok{i} ")).collect()
}

/// A body that counts its runs and streams `n` tokens.
fn counted_body(
    runs: &Arc<AtomicUsize>,
    n: usize,
) -> impl FnOnce() -> std::future::Ready<Result<Tokens, StreamError>> {
    let runs = runs.clone();
    move || {
        runs.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(Streamed::new(stream::iter(
            tokens(n).into_iter().map(Ok),
        ))))
    }
}

/// Reads a stream to its end: the chunks, and the error that ended it, if any.
async fn drain(mut s: Tokens) -> (Vec<String>, Option<StreamError>) {
    let mut got = Vec::new();
    while let Some(item) = s.next().await {
        match item {
            Ok(t) => got.push(t),
            Err(e) => {
                assert!(s.next().await.is_none(), "nothing after the error");
                return (got, Some(e));
            }
        }
    }
    (got, None)
}

fn small_batches(call: Call) -> Call {
    call.stream_options(StreamOptions::default().batch(16, Duration::from_millis(10)))
}

/// A stream of 2,500 chunks (several pages of the journal) runs once; later calls, on other
/// workers and without a cache, replay every chunk in order; a cached worker replays it from
/// memory the second time.
pub async fn stream_runs_once_and_replays_in_order(b: &Backend) {
    let op = unique_op("stream_once");
    let call = || small_batches(Call::new(op.clone()).key(&"prompt"));
    let runs = Arc::new(AtomicUsize::new(0));
    let first = b
        .worker("a")
        .stream(call(), counted_body(&runs, 2500))
        .await
        .unwrap();
    let (got, end) = drain(first).await;
    assert!(end.is_none());
    assert_eq!(got, tokens(2500));
    for worker in ["b", "c"] {
        let again = b
            .worker(worker)
            .stream(call(), counted_body(&runs, 1))
            .await
            .unwrap();
        let (replayed, end) = drain(again).await;
        assert!(end.is_none());
        assert_eq!(replayed, tokens(2500), "replayed in order on {worker}");
    }
    let cached = b.cached_worker("d");
    for _ in 0..2 {
        let s = cached.stream(call(), counted_body(&runs, 1)).await.unwrap();
        assert_eq!(drain(s).await.0, tokens(2500));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one generation");
    let key = call().key_value();
    let record = b.worker("a").record(&key).await.unwrap().unwrap();
    assert_eq!(record.status, Status::Completed);
    assert_eq!(
        b.store.count_chunks(&key, record.attempt).await.unwrap(),
        2500
    );
}

/// A duplicate that arrives while the stream is being generated receives the chunks so far, then
/// each new one, and ends when the stream is recorded; the body runs once.
pub async fn duplicate_follows_a_live_stream(b: &Backend) {
    let op = unique_op("stream_follow");
    let call = || small_batches(Call::new(op.clone()).key(&"prompt"));
    let (feed, fed) = mpsc::unbounded_channel::<String>();
    let runs = Arc::new(AtomicUsize::new(0));
    let owner = {
        let runs = runs.clone();
        b.worker("owner")
            .stream(call(), move || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                let s = tokio_stream_of(fed);
                Ok::<_, StreamError>(Streamed::new(s))
            })
            .await
            .unwrap()
    };
    let owner = tokio::spawn(drain(owner));
    for t in tokens(5) {
        feed.send(t).unwrap();
    }
    // The owner's consumer has read them; the journal appends them within its 10 ms interval.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let follower = b
        .worker("duplicate")
        .stream(call(), counted_body(&runs, 1))
        .await
        .unwrap();
    let follower = tokio::spawn(drain(follower));
    tokio::time::sleep(Duration::from_millis(200)).await;
    for t in tokens(40).into_iter().skip(5) {
        feed.send(t).unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(feed);
    let (owned, end) = tokio::time::timeout(Duration::from_secs(10), owner)
        .await
        .expect("the owner's stream ends")
        .unwrap();
    assert!(end.is_none());
    let (followed, end) = tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("the follower's stream ends once the stream is recorded")
        .unwrap();
    assert!(end.is_none(), "{end:?}");
    assert_eq!(owned, tokens(40));
    assert_eq!(followed, tokens(40));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "never a second generation");
}

/// A stream of the tokens sent on `fed`, ending when the sender is dropped.
fn tokio_stream_of(
    fed: mpsc::UnboundedReceiver<String>,
) -> impl futures_util::Stream<Item = Result<String, StreamError>> + Send + 'static {
    stream::unfold(fed, |mut fed| async move {
        let t = fed.recv().await?;
        Some((Ok(t), fed))
    })
}

/// A stream that fails part-way delivers its chunks, then the error; the record is failed, keeps
/// the chunks, and says how far it got; the next call generates it again.
pub async fn error_mid_stream_fails_and_keeps_its_chunks(b: &Backend) {
    let op = unique_op("stream_error");
    let call = || small_batches(Call::new(op.clone()).key(&"prompt"));
    let idem = b.worker("a");
    let failing = idem
        .stream(call(), || async {
            let items = tokens(3)
                .into_iter()
                .map(Ok)
                .chain([Err(StreamError::Model("overloaded".into()))]);
            Ok::<_, StreamError>(Streamed::new(stream::iter(items)))
        })
        .await
        .unwrap();
    let (got, end) = drain(failing).await;
    assert_eq!(got, tokens(3));
    assert_eq!(end, Some(StreamError::Model("overloaded".into())));
    let key = call().key_value();
    let record = idem.record(&key).await.unwrap().unwrap();
    assert_eq!(record.status, Status::Failed);
    let error = record.error.unwrap();
    assert!(
        error.contains("overloaded") && error.contains("after 3 chunks"),
        "{error}"
    );
    assert_eq!(b.store.count_chunks(&key, record.attempt).await.unwrap(), 3);

    let runs = Arc::new(AtomicUsize::new(0));
    let again = idem.stream(call(), counted_body(&runs, 4)).await.unwrap();
    assert_eq!(drain(again).await, (tokens(4), None));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the next call generates it again"
    );
    let attempt = idem.record(&key).await.unwrap().unwrap().attempt;
    assert_eq!(b.store.count_chunks(&key, attempt).await.unwrap(), 4);
    assert_eq!(
        b.store
            .read_chunks(&key, record.attempt, 0, 10)
            .await
            .unwrap(),
        vec![],
        "the new attempt's first append dropped the failed one's chunks"
    );
}

/// Under `cache_errors`, a stream that ended with a recorded error replays its chunks, then the
/// same error, without generating it again.
pub async fn cache_errors_replays_chunks_then_the_error(b: &Backend) {
    let op = unique_op("stream_cache_errors");
    let call = || small_batches(Call::new(op.clone()).key(&"prompt"));
    let runs = Arc::new(AtomicUsize::new(0));
    let permanent = |e: &StreamError| matches!(e, StreamError::Model(m) if m == "refused");
    for worker in ["a", "b"] {
        let runs = runs.clone();
        let s = b
            .worker(worker)
            .stream_caching_errors_if(call(), permanent, move || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                let items = tokens(2)
                    .into_iter()
                    .map(Ok)
                    .chain([Err(StreamError::Model("refused".into()))]);
                Ok::<_, StreamError>(Streamed::new(stream::iter(items)))
            })
            .await
            .unwrap();
        let (got, end) = drain(s).await;
        assert_eq!(got, tokens(2), "{worker}");
        assert_eq!(end, Some(StreamError::Model("refused".into())), "{worker}");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// A caller that drops the stream part-way cancels the attempt: the claim is released at once,
/// the log says `cancelled`, and the next call generates the stream again.
pub async fn dropped_stream_cancels_the_attempt(b: &Backend) {
    let op = unique_op("stream_dropped");
    let call =
        || small_batches(Call::new(op.clone()).key(&"prompt")).lease(Duration::from_secs(600));
    let idem = b.worker("a");
    let mut s = idem
        .stream(call(), || async {
            let endless = stream::iter(0..).map(|i| Ok::<_, StreamError>(format!("t{i}")));
            Ok::<_, StreamError>(Streamed::new(endless))
        })
        .await
        .unwrap();
    assert_eq!(s.next().await.unwrap().unwrap(), "t0");
    assert_eq!(s.next().await.unwrap().unwrap(), "t1");
    drop(s);
    let key = call().key_value();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let log = crate::logged_outcomes(&idem, &key).await;
        if log == vec![(log[0].0, AttemptOutcome::Cancelled)] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not cancelled: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let runs = Arc::new(AtomicUsize::new(0));
    let again = idem.stream(call(), counted_body(&runs, 2)).await.unwrap();
    assert_eq!(drain(again).await, (tokens(2), None));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "ran again at once, long before the lease"
    );
}

/// A follower whose generating attempt dies (its worker stops renewing, the lease runs out)
/// receives the chunks journaled so far, then `StreamInterrupted`; the next call takes over and
/// generates the stream anew.
pub async fn follower_of_a_dead_attempt_is_interrupted(b: &Backend) {
    let op = unique_op("stream_dead_owner");
    let call = || {
        small_batches(Call::new(op.clone()).key(&"prompt"))
            .lease(Duration::from_millis(400))
            .heartbeat(false)
    };
    // The owner yields two chunks, then its worker "dies": the stream is never polled again
    // (kept alive, so nothing is released), and nothing renews its lease.
    let mut stalled = b
        .worker("owner")
        .stream(call(), || async {
            let s = stream::iter(tokens(2).into_iter().map(Ok)).chain(stream::pending());
            Ok::<_, StreamError>(Streamed::new(s))
        })
        .await
        .unwrap();
    assert_eq!(stalled.next().await.unwrap().unwrap(), "tok0 ");
    assert_eq!(stalled.next().await.unwrap().unwrap(), "tok1 ");
    let stalled = tokio::spawn(async move {
        let _keep = stalled;
        std::future::pending::<()>().await;
    });
    tokio::time::sleep(Duration::from_millis(100)).await; // journaled
    let follower = b
        .worker("duplicate")
        .stream(call(), || async {
            Err::<Tokens, _>(StreamError::Model("a follower never runs the body".into()))
        })
        .await
        .unwrap();
    let (got, end) = tokio::time::timeout(Duration::from_secs(10), drain(follower))
        .await
        .expect("the follower ends when the lease runs out");
    assert_eq!(got, tokens(2));
    match end.as_ref().and_then(StreamError::idem) {
        Some(Error::StreamInterrupted { chunks: 2, .. }) => {}
        other => panic!("expected StreamInterrupted after 2 chunks, got {end:?} / {other:?}"),
    }
    let runs = Arc::new(AtomicUsize::new(0));
    let again = b
        .worker("next")
        .stream(call(), counted_body(&runs, 3))
        .await
        .unwrap();
    assert_eq!(drain(again).await, (tokens(3), None));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "taken over and generated anew"
    );
    stalled.abort();
}

/// A chunk that cannot be encoded, one over the chunk limit, and a stream over its length limit
/// each end the stream with a typed error naming the operation and key; the chunks journaled
/// before are kept and the record is failed.
pub async fn bad_chunks_end_the_stream_with_typed_errors(b: &Backend) {
    let idem = b.worker("a");
    // Over the chunk size limit.
    let op = unique_op("stream_big_chunk");
    let call = small_batches(Call::new(op.clone()).key(&"p"))
        .stream_options(StreamOptions::default().limits(1000, 1 << 20, 16));
    let s = idem
        .stream(call, || async {
            let items = ["small".to_string(), "x".repeat(100)].map(Ok);
            Ok::<_, StreamError>(Streamed::new(stream::iter(items)))
        })
        .await
        .unwrap();
    let (got, end) = drain(s).await;
    assert_eq!(got, vec!["small".to_string()]);
    let end = end.unwrap();
    assert!(
        matches!(
            end.idem(),
            Some(Error::ChunkTooLarge {
                chunk: 1,
                limit: 16,
                ..
            })
        ),
        "{end}"
    );
    assert!(end.to_string().contains(&op), "{end}");
    let key = Call::new(op).key(&"p").key_value();
    let record = idem.record(&key).await.unwrap().unwrap();
    assert_eq!(record.status, Status::Failed);
    assert_eq!(b.store.count_chunks(&key, record.attempt).await.unwrap(), 1);

    // Over the chunk count limit.
    let op = unique_op("stream_too_long");
    let call = small_batches(Call::new(op).key(&"p"))
        .stream_options(StreamOptions::default().limits(3, 1 << 20, 1 << 20));
    let runs = Arc::new(AtomicUsize::new(0));
    let (got, end) = drain(idem.stream(call, counted_body(&runs, 10)).await.unwrap()).await;
    assert_eq!(got, tokens(3));
    assert!(
        matches!(
            end.as_ref().and_then(StreamError::idem),
            Some(Error::StreamTooLong { .. })
        ),
        "{end:?}"
    );

    // A chunk that cannot be encoded (a map with non-string keys).
    let op = unique_op("stream_unencodable");
    let s = idem
        .stream(Call::new(op).key(&"p"), || async {
            let bad: HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
            let items = [Ok(HashMap::new()), Ok(bad)];
            Ok::<_, StreamError>(Streamed::new(stream::iter(items)))
        })
        .await
        .unwrap();
    let items: Vec<_> = s.collect().await;
    assert_eq!(items.len(), 2);
    assert!(items[0].is_ok());
    match &items[1] {
        Err(e) => assert!(
            matches!(e.idem(), Some(Error::ChunkEncode { chunk: 1, .. })),
            "{e}"
        ),
        Ok(v) => panic!("an unencodable chunk was yielded: {v:?}"),
    }
}

/// Replays can keep the original pacing.
pub async fn replay_can_keep_the_original_pacing(b: &Backend) {
    let op = unique_op("stream_pacing");
    let call = || {
        small_batches(Call::new(op.clone()).key(&"p"))
            .stream_options(StreamOptions::default().pacing(true))
    };
    let idem = b.worker("a");
    let slow = idem
        .stream(call(), || async {
            let s = stream::iter(tokens(3)).then(|t| async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok::<_, StreamError>(t)
            });
            Ok::<_, StreamError>(Streamed::new(s))
        })
        .await
        .unwrap();
    assert_eq!(drain(slow).await.0, tokens(3));
    let started = std::time::Instant::now();
    let replay = b
        .worker("b")
        .stream(call(), counted_body(&Arc::default(), 1))
        .await
        .unwrap();
    assert_eq!(drain(replay).await.0, tokens(3));
    let took = started.elapsed();
    // Chunk 0 at ~100 ms, chunk 2 at ~300 ms: the replay spans their ~200 ms gap.
    assert!(took >= Duration::from_millis(150), "replayed in {took:?}");
}
