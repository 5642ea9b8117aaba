//! A local HTTP "model server" (axum) that bills tokens per generation, with a seeded fault
//! schedule: sometimes it does the work, bills it, and closes the connection without answering
//! (the seed-000 incident); sometimes it is slower than the client's timeout (it still bills,
//! late). Like many real providers it does NOT deduplicate by `Idempotency-Key` unless asked to.
//! It also streams tokens (`model_stream.rs`).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use parking_lot::Mutex;
use tokio::net::TcpListener;

use super::chance;
use super::model_client::{GenerateRequest, Generation};
use super::model_stream::{self, StreamMeter};

/// What the server does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Bill, then close the connection without a response.
    DropAfterBilling,
    /// Take longer than any sane client timeout (and bill at the end).
    Slow,
}

/// The billing meter, shared with the report.
#[derive(Debug, Default)]
pub(crate) struct Meter {
    /// Generations billed.
    pub(crate) calls: AtomicU64,
    /// Tokens billed.
    pub(crate) tokens: AtomicU64,
    /// Requests whose connection was dropped after billing.
    pub(crate) dropped: AtomicU64,
    /// Requests slower than the client's timeout.
    pub(crate) slow: AtomicU64,
    /// Requests answered from the `Idempotency-Key` cache (only with dedup on).
    pub(crate) deduplicated: AtomicU64,
    /// Requests being worked on right now.
    pub(crate) in_flight: AtomicU64,
}

#[derive(Debug)]
struct Schedule {
    seed: u64,
    dedup: bool,
    drop_pct: u64,
    slow_pct: u64,
    meter: Arc<Meter>,
    /// How many requests each prompt has had (the fault schedule's clock).
    seen: Mutex<HashMap<String, u64>>,
    keys: Mutex<HashSet<String>>,
}

/// A running server.
#[derive(Debug)]
pub(crate) struct ModelServer {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// Its billing meter.
    pub(crate) meter: Arc<Meter>,
    /// The billing meter of its streaming endpoint.
    pub(crate) streams: Arc<StreamMeter>,
}

impl ModelServer {
    /// Starts a server on 127.0.0.1 (ephemeral port). `stream_drop_pct` percent of streams
    /// break off part-way.
    pub(crate) async fn start(
        seed: u64,
        dedup: bool,
        drop_pct: u64,
        slow_pct: u64,
        stream_drop_pct: u64,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let meter = Arc::new(Meter::default());
        let schedule = Arc::new(Schedule {
            seed,
            dedup,
            drop_pct,
            slow_pct,
            meter: meter.clone(),
            seen: Mutex::new(HashMap::new()),
            keys: Mutex::new(HashSet::new()),
        });
        let streams = Arc::new(StreamMeter::default());
        let app = Router::new()
            .route("/v1/generate", post(generate))
            .with_state(schedule)
            .merge(model_stream::routes(seed, stream_drop_pct, streams.clone()));
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("model server stopped: {e}");
            }
        });
        Ok(Self {
            addr,
            meter,
            streams,
        })
    }

    /// The base URL clients call.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until no request is being worked on (slow ones still bill after their client left).
    pub(crate) async fn settle(&self) {
        for _ in 0..400 {
            if self.meter.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// `POST /v1/generate`: `{"prompt"}` -> `{"text", "tokens"}`.
async fn generate(
    State(schedule): State<Arc<Schedule>>,
    headers: HeaderMap,
    Json(request): Json<GenerateRequest>,
) -> Response {
    let prompt = request.prompt;
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let meter = schedule.meter.clone();

    let n = {
        let mut seen = schedule.seen.lock();
        let n = seen.entry(prompt.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let roll = chance(schedule.seed, &["fault", &prompt, &n.to_string()]) % 100;
    let fault = if roll < schedule.drop_pct {
        Fault::DropAfterBilling
    } else if roll < schedule.drop_pct + schedule.slow_pct {
        Fault::Slow
    } else {
        Fault::None
    };
    let tokens = 180 + chance(schedule.seed, &["tokens", &prompt]) % 120;
    let generation = Generation {
        text: format!("Draft for {prompt:?}: {tokens} tokens of prose."),
        tokens,
    };

    if schedule.dedup {
        if let Some(k) = &key {
            if !schedule.keys.lock().insert(k.clone()) {
                meter.deduplicated.fetch_add(1, Ordering::SeqCst);
                return Json(generation).into_response();
            }
        }
    }

    // The generation runs on its own task: hyper drops this handler when the client hangs up
    // (its timeout), but a real model keeps generating and bills all the same.
    meter.in_flight.fetch_add(1, Ordering::SeqCst);
    let work = 15 + chance(schedule.seed, &["latency", &prompt, &n.to_string()]) % 25;
    let work = if fault == Fault::Slow { 600 } else { work };
    let billed = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(work)).await;
        meter.calls.fetch_add(1, Ordering::SeqCst);
        meter.tokens.fetch_add(tokens, Ordering::SeqCst);
        match fault {
            Fault::DropAfterBilling => meter.dropped.fetch_add(1, Ordering::SeqCst),
            Fault::Slow => meter.slow.fetch_add(1, Ordering::SeqCst),
            Fault::None => 0,
        };
        meter.in_flight.fetch_sub(1, Ordering::SeqCst);
    });
    let _ = billed.await;
    if fault == Fault::DropAfterBilling {
        return connection_reset(); // billed, and the response is lost
    }
    Json(generation).into_response()
}

/// A response whose body fails before its first byte: hyper then closes the connection
/// without writing anything, so the client sees the connection close with no answer.
fn connection_reset() -> Response {
    let lost = std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "billed, then lost");
    Body::from_stream(futures_util::stream::once(async move {
        Err::<axum::body::Bytes, _>(lost)
    }))
    .into_response()
}
