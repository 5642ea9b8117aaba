//! The model server's streaming endpoint: `POST /v1/stream` answers with server-sent events, one
//! token per event and a final `[DONE]`, as the real APIs do, billing each token as it is sent.
//! On a seeded schedule a stream breaks off part-way: the tokens sent are billed, and the
//! connection closes without `[DONE]`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::routing::post;
use axum::{Json, Router};
use futures_util::{stream, Stream};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::chance;

/// How long the model takes per token: slow enough that a duplicate request can arrive while
/// a stream is under way, as it does against a real model.
const TOKEN_PACE: Duration = Duration::from_millis(2);

/// The request body of `POST /v1/stream`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StreamRequest {
    /// What to write about.
    pub(crate) prompt: String,
    /// Who is asking (the `user` field of the real APIs): the server's log of generations
    /// keeps it, so the report can tell which caller started each one.
    pub(crate) user: String,
}

/// The data of one token event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TokenEvent {
    /// The token's text.
    pub(crate) token: String,
}

/// One stream the server started.
#[derive(Debug, Clone)]
struct Generation {
    user: String,
    /// The schedule breaks it off part-way.
    dropped: bool,
}

/// The streaming endpoint's billing meter, shared with the report.
#[derive(Debug, Default)]
pub(crate) struct StreamMeter {
    /// Streams started (each one a generation, billed token by token).
    pub(crate) generations: AtomicU64,
    /// Tokens sent, and billed.
    pub(crate) tokens: AtomicU64,
    /// Streams broken off part-way (their tokens so far billed).
    pub(crate) dropped: AtomicU64,
    /// The generations of each prompt, in the order they started.
    log: Mutex<HashMap<String, Vec<Generation>>>,
}

impl StreamMeter {
    /// Generations that paid for a draft already under way or delivered: for each prompt, every
    /// generation started after an earlier one of that prompt that was not broken off. A
    /// generation after a broken one is the retry the caller needs, not a duplicate.
    pub(crate) fn duplicate_generations(&self) -> u64 {
        let log = self.log.lock();
        let mut duplicates = 0;
        for generations in log.values() {
            let mut delivered = false;
            for g in generations {
                if delivered {
                    duplicates += 1;
                }
                delivered |= !g.dropped;
            }
        }
        duplicates
    }

    /// Whether `user` started any generation of `prompt`.
    pub(crate) fn generated_for(&self, prompt: &str, user: &str) -> bool {
        self.log
            .lock()
            .get(prompt)
            .is_some_and(|gs| gs.iter().any(|g| g.user == user))
    }

    /// Logs a new generation of `prompt` and returns its number (from 1) for the schedule.
    fn start(&self, prompt: &str, user: &str, dropped: impl Fn(u64) -> bool) -> (u64, bool) {
        let mut log = self.log.lock();
        let generations = log.entry(prompt.to_owned()).or_default();
        let n = generations.len() as u64 + 1;
        let dropped = dropped(n);
        generations.push(Generation {
            user: user.to_owned(),
            dropped,
        });
        self.generations.fetch_add(1, Ordering::SeqCst);
        (n, dropped)
    }
}

#[derive(Debug)]
struct StreamSchedule {
    seed: u64,
    drop_pct: u64,
    meter: Arc<StreamMeter>,
}

/// The `POST /v1/stream` route, billing to `meter`; `drop_pct` percent of streams break off.
pub(crate) fn routes(seed: u64, drop_pct: u64, meter: Arc<StreamMeter>) -> Router {
    let schedule = Arc::new(StreamSchedule {
        seed,
        drop_pct,
        meter,
    });
    Router::new()
        .route("/v1/stream", post(stream_tokens))
        .with_state(schedule)
}

/// An event, or the failure that makes hyper close the connection mid-body.
type Sent = Result<Event, std::io::Error>;

/// `POST /v1/stream`: `{"prompt", "user"}` -> `data: {"token"}` events, then `data: [DONE]`.
async fn stream_tokens(
    State(schedule): State<Arc<StreamSchedule>>,
    Json(request): Json<StreamRequest>,
) -> Sse<impl Stream<Item = Sent>> {
    let (seed, drop_pct, meter) = (schedule.seed, schedule.drop_pct, &schedule.meter);
    let prompt = request.prompt;
    let (n, dropped) = meter.start(&prompt, &request.user, |n| {
        chance(seed, &["stream-drop", &prompt, &n.to_string()]) % 100 < drop_pct
    });
    let total = 40 + chance(seed, &["stream-tokens", &prompt]) % 40;
    // Where a dropped stream breaks off: after at least one token, before the last.
    let break_at =
        dropped.then(|| 1 + chance(seed, &["stream-break", &prompt, &n.to_string()]) % (total - 1));
    let meter = meter.clone();
    let tokens = stream::unfold(0, move |i| {
        let (meter, prompt) = (meter.clone(), prompt.clone());
        async move {
            if i > total {
                return None;
            }
            if Some(i) == break_at {
                meter.dropped.fetch_add(1, Ordering::SeqCst);
                let lost = std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "stream broken off after billing",
                );
                // Nothing follows an error: the body ends there.
                return Some((Err(lost), total + 1));
            }
            if i == total {
                return Some((Ok(Event::default().data("[DONE]")), i + 1));
            }
            tokio::time::sleep(TOKEN_PACE).await;
            meter.tokens.fetch_add(1, Ordering::SeqCst);
            let event = TokenEvent {
                token: word(seed, &prompt, i),
            };
            let data = serde_json::to_string(&event).unwrap_or_default();
            Some((Ok(Event::default().data(data)), i + 1))
        }
    });
    Sse::new(tokens)
}

const WORDS: &[&str] = &[
    "the", "key", "retry", "stream", "token", "model", "once", "again", "billing", "draft",
    "lease", "worker", "record", "replay", "follow", "journal",
];

/// The `i`th token of `prompt`'s draft: the same for every generation of the prompt, as with a
/// model at temperature 0.
fn word(seed: u64, prompt: &str, i: u64) -> String {
    let n = chance(seed, &["stream-word", prompt, &i.to_string()]) as usize % WORDS.len();
    format!(" {}", WORDS[n])
}
