//! The local services the agent talks to, in the supervisor's process (so they outlive every
//! killed agent): the model (`POST /v1/chat`, bills tokens per turn and never deduplicates,
//! like most LLM APIs), a search API (`POST /search`) and a notification service (`POST
//! /notify`). Search and notify honour `Idempotency-Key` the way a payment API does: a repeated
//! key gets the first response back and nothing happens a second time. The notification service
//! loses some responses on a seeded schedule: it sends, then drops the connection.
//! Every effect is counted per run (the `X-Agent-Run` header) and per tool-call id, so a
//! duplicate is visible.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::messages::{ChatRequest, Turn};
use super::model;
use idem_examples::seeded::chance;

/// What the services saw of one run.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunMeter {
    /// Model turns billed.
    pub(crate) model_turns: u64,
    /// Tokens billed.
    pub(crate) tokens_billed: u64,
    /// Queries the search API ran, per tool-call id.
    pub(crate) searches: HashMap<String, u64>,
    /// Notifications sent, per tool-call id.
    pub(crate) notifications: HashMap<String, u64>,
    /// Requests answered from the `Idempotency-Key` record instead of sending again.
    pub(crate) notification_retries_deduplicated: u64,
    /// Notifications sent whose response was lost (connection dropped after sending).
    pub(crate) notification_responses_lost: u64,
    /// Searches answered from the `Idempotency-Key` record.
    pub(crate) search_retries_deduplicated: u64,
    /// First responses by `Idempotency-Key` (search and notify).
    responses: HashMap<String, Value>,
}

impl RunMeter {
    /// Effects beyond one per tool call (searches and notifications).
    pub(crate) fn duplicate_effects(&self) -> u64 {
        let extra = |m: &HashMap<String, u64>| m.values().map(|n| n.saturating_sub(1)).sum::<u64>();
        extra(&self.searches) + extra(&self.notifications)
    }

    /// Notifications sent, all told.
    pub(crate) fn notifications_sent(&self) -> u64 {
        self.notifications.values().sum()
    }
}

#[derive(Debug)]
struct Shared {
    seed: u64,
    notify_drop_pct: u64,
    runs: Mutex<HashMap<String, RunMeter>>,
}

/// The running services.
#[derive(Debug, Clone)]
pub(crate) struct Services {
    /// Where they listen.
    pub(crate) addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Services {
    /// Starts the services on 127.0.0.1 (ephemeral port).
    pub(crate) async fn start(seed: u64, notify_drop_pct: u64) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            seed,
            notify_drop_pct,
            runs: Mutex::new(HashMap::new()),
        });
        let app = Router::new()
            .route("/v1/chat", post(chat))
            .route("/search", post(search))
            .route("/notify", post(notify))
            .with_state(shared.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("agent services stopped: {e}");
            }
        });
        Ok(Self { addr, shared })
    }

    /// The base URL.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the services saw of `run`.
    pub(crate) fn meter(&self, run: &str) -> RunMeter {
        self.shared
            .runs
            .lock()
            .get(run)
            .cloned()
            .unwrap_or_default()
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn run_of(headers: &HeaderMap) -> String {
    header(headers, "x-agent-run").unwrap_or_default()
}

/// `POST /v1/chat`: the next turn, billed every time it is asked (no deduplication).
async fn chat(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(request): Json<ChatRequest>,
) -> Json<Turn> {
    let message = model::next_turn(&request.messages);
    let tokens = model::tokens(&request.messages, &message);
    let mut runs = shared.runs.lock();
    let meter = runs.entry(run_of(&headers)).or_default();
    meter.model_turns += 1;
    meter.tokens_billed += tokens;
    Json(Turn { message, tokens })
}

/// `POST /search` body.
#[derive(Debug, Deserialize)]
struct SearchRequest {
    call_id: String,
    query: String,
    top_k: usize,
}

const TITLES: &[&str] = &[
    "Idempotency keys in payment APIs",
    "Fencing tokens and leases",
    "Exactly-once delivery, mostly",
    "The outbox pattern",
    "Retry storms and backoff",
    "Durable execution engines",
    "Why agents repeat tool calls",
];

/// `POST /search`: deterministic hits for a query; a repeated `Idempotency-Key` replays.
async fn search(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(request): Json<SearchRequest>,
) -> Json<Value> {
    let key = header(&headers, "idempotency-key");
    let mut runs = shared.runs.lock();
    let meter = runs.entry(run_of(&headers)).or_default();
    if let Some(first) = key.as_ref().and_then(|k| meter.responses.get(k)) {
        let first = first.clone();
        meter.search_retries_deduplicated += 1;
        return Json(first);
    }
    *meter.searches.entry(request.call_id).or_default() += 1;
    let start = chance(shared.seed, &["search", &request.query]) as usize;
    let hits: Vec<&str> = (0..request.top_k.min(TITLES.len()))
        .map(|i| TITLES[(start + i) % TITLES.len()])
        .collect();
    let response = json!({ "hits": hits });
    if let Some(k) = key {
        meter.responses.insert(k, response.clone());
    }
    Json(response)
}

/// `POST /notify` body.
#[derive(Debug, Deserialize)]
struct NotifyRequest {
    call_id: String,
    to: String,
    text: String,
}

/// `POST /notify`: sends (counts) a notification and answers its id; a repeated
/// `Idempotency-Key` gets the first answer and sends nothing. On a seeded schedule the first
/// request of a tool call sends and then loses its response.
async fn notify(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Json(request): Json<NotifyRequest>,
) -> Response {
    let key = header(&headers, "idempotency-key");
    let mut runs = shared.runs.lock();
    let meter = runs.entry(run_of(&headers)).or_default();
    if let Some(first) = key.as_ref().and_then(|k| meter.responses.get(k)) {
        let first = first.clone();
        meter.notification_retries_deduplicated += 1;
        return Json(first).into_response();
    }
    let sent = meter
        .notifications
        .entry(request.call_id.clone())
        .or_default();
    *sent += 1;
    let first_send = *sent == 1;
    let id = format!("ntf-{}", meter.notifications_sent());
    let response = json!({ "notification_id": id, "to": request.to, "chars": request.text.len() });
    if let Some(k) = key {
        meter.responses.insert(k, response.clone());
    }
    let lose = first_send
        && chance(shared.seed, &["notify-lost", &request.call_id]) % 100 < shared.notify_drop_pct;
    if lose {
        meter.notification_responses_lost += 1;
        return connection_lost();
    }
    Json(response).into_response()
}

/// A response whose body fails before its first byte: hyper closes the connection without
/// writing anything, so the client sees it close with no answer (after the send happened).
fn connection_lost() -> Response {
    let lost = std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "sent, then lost");
    Body::from_stream(futures_util::stream::once(async move {
        Err::<axum::body::Bytes, _>(lost)
    }))
    .into_response()
}
