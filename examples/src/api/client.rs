//! The `api` example's client run: it fires what real clients do at `POST /drafts` with
//! reqwest (retries after a lost response, concurrent duplicates, a changed body under a used
//! key, requests without a key) and counts what came back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::Serialize;

use super::DraftRequest;

/// What the client saw.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    requests: AtomicU64,
    fresh: AtomicU64,
    replays: AtomicU64,
    conflicts_409: AtomicU64,
    mismatches_422: AtomicU64,
    missing_400: AtomicU64,
    lost_responses: AtomicU64,
    other: AtomicU64,
    /// Every successful body per key: they must all be the same.
    bodies: Mutex<HashMap<String, Vec<String>>>,
}

/// The example's JSON line.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) requests: u64,
    pub(crate) executions: u64,
    pub(crate) replays: u64,
    pub(crate) conflicts_409: u64,
    pub(crate) mismatches_422: u64,
    pub(crate) missing_400: u64,
    pub(crate) duplicate_executions: u64,
    pub(crate) lost_responses: u64,
    pub(crate) first_responses: u64,
    pub(crate) inconsistent_replays: u64,
    pub(crate) unexpected_statuses: u64,
    pub(crate) model_calls_billed: u64,
}

impl Tally {
    /// The report, with the server's own counts.
    pub(crate) fn report(&self, executions: u64, duplicates: u64, billed: u64) -> Report {
        let get = |c: &AtomicU64| c.load(Ordering::SeqCst);
        let inconsistent = self
            .bodies
            .lock()
            .values()
            .filter(|bodies| bodies.windows(2).any(|w| w[0] != w[1]))
            .count() as u64;
        Report {
            requests: get(&self.requests),
            executions,
            replays: get(&self.replays),
            conflicts_409: get(&self.conflicts_409),
            mismatches_422: get(&self.mismatches_422),
            missing_400: get(&self.missing_400),
            duplicate_executions: duplicates,
            lost_responses: get(&self.lost_responses),
            first_responses: get(&self.fresh),
            inconsistent_replays: inconsistent,
            unexpected_statuses: get(&self.other),
            model_calls_billed: billed,
        }
    }
}

/// What one request got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Got {
    Created,
    Conflict,
    Refused,
    Lost,
}

/// The client side of the run.
#[derive(Debug)]
pub(crate) struct Client {
    base: String,
    http: reqwest::Client,
    /// A client that gives up before the model answers: its responses are lost.
    impatient: reqwest::Client,
    tally: Arc<Tally>,
}

impl Client {
    pub(crate) fn new(base: &str, tally: Arc<Tally>) -> reqwest::Result<Self> {
        Ok(Self {
            base: format!("{}/drafts", base.trim_end_matches('/')),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            impatient: reqwest::Client::builder()
                .timeout(Duration::from_millis(5))
                .build()?,
            tally,
        })
    }

    async fn send(
        &self,
        impatient: bool,
        tenant: &str,
        key: Option<&str>,
        body: &DraftRequest,
    ) -> Got {
        let t = &self.tally;
        t.requests.fetch_add(1, Ordering::SeqCst);
        let http = if impatient {
            &self.impatient
        } else {
            &self.http
        };
        let mut request = http.post(&self.base).header("x-tenant", tenant).json(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(_) => {
                t.lost_responses.fetch_add(1, Ordering::SeqCst);
                return Got::Lost;
            }
        };
        let replayed = response.headers().contains_key("idempotent-replayed");
        let status = response.status().as_u16();
        let text = match response.text().await {
            Ok(text) => text,
            Err(_) => {
                t.lost_responses.fetch_add(1, Ordering::SeqCst);
                return Got::Lost;
            }
        };
        match status {
            201 => {
                let counter = if replayed { &t.replays } else { &t.fresh };
                counter.fetch_add(1, Ordering::SeqCst);
                let id = format!("{tenant}/{}", key.unwrap_or("-"));
                t.bodies.lock().entry(id).or_default().push(text);
                Got::Created
            }
            409 => {
                t.conflicts_409.fetch_add(1, Ordering::SeqCst);
                Got::Conflict
            }
            422 => {
                t.mismatches_422.fetch_add(1, Ordering::SeqCst);
                Got::Refused
            }
            400 => {
                t.missing_400.fetch_add(1, Ordering::SeqCst);
                Got::Refused
            }
            _ => {
                t.other.fetch_add(1, Ordering::SeqCst);
                Got::Refused
            }
        }
    }

    /// Sends until the request is answered: after a lost response or a 409, as a client
    /// honouring `Retry-After` would (shortened, so the run stays short).
    async fn until_answered(&self, tenant: &str, key: &str, body: &DraftRequest) -> Got {
        for _ in 0..200 {
            match self.send(false, tenant, Some(key), body).await {
                Got::Conflict | Got::Lost => tokio::time::sleep(Duration::from_millis(20)).await,
                got => return got,
            }
        }
        Got::Lost
    }

    /// One draft's scenario (by `i`): a lost response then retries, concurrent duplicates, a
    /// plain request with retries, or a changed body under a used key; and one request
    /// without a key.
    async fn draft(&self, i: usize) {
        let tenant = ["acme", "globex"][i % 2];
        let key = format!("draft-{i}");
        let body = DraftRequest {
            title: format!("Idempotency keys, part {i}"),
            lang: ["en", "de", "fr"][i % 3].to_owned(),
        };
        match i % 4 {
            0 => {
                // The response is lost (the client gives up first), then the client retries.
                self.send(true, tenant, Some(&key), &body).await;
                self.until_answered(tenant, &key, &body).await;
                self.until_answered(tenant, &key, &body).await;
            }
            1 => {
                // Three tabs send the same request at once; those refused retry.
                let tabs = (0..3).map(|_| async {
                    if self.send(false, tenant, Some(&key), &body).await == Got::Conflict {
                        self.until_answered(tenant, &key, &body).await;
                    }
                });
                futures_util::future::join_all(tabs).await;
            }
            2 => {
                for _ in 0..3 {
                    self.until_answered(tenant, &key, &body).await;
                }
            }
            _ => {
                self.until_answered(tenant, &key, &body).await;
                let changed = DraftRequest {
                    title: format!("{} (edited)", body.title),
                    ..body.clone()
                };
                self.send(false, tenant, Some(&key), &changed).await;
                self.until_answered(tenant, &key, &body).await;
            }
        }
        self.send(false, tenant, None, &body).await;
    }

    /// Runs `drafts` scenarios, `concurrency` at a time.
    pub(crate) async fn run(&self, drafts: usize, concurrency: usize) {
        futures_util::stream::iter(0..drafts)
            .for_each_concurrent(concurrency.max(1), |i| self.draft(i))
            .await;
    }
}
