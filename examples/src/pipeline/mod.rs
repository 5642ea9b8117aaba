//! The AI pipeline of the `ai_pipeline` example: preprocess -> generate a draft (an HTTP call to
//! a model that bills per generation) -> save it (a plain INSERT) -> notify (an outbox row).
//! The same steps run with `#[idempotent]` or without it, under the same seeded faults.
//! `--stream` reads the draft as a stream of tokens instead (`stream_run.rs`).

pub(crate) mod app_db;
pub(crate) mod args;
pub(crate) mod attempts;
pub(crate) mod compare;
pub(crate) mod crash;
pub(crate) mod mode_run;
pub(crate) mod model_client;
pub(crate) mod model_server;
pub(crate) mod model_stream;
pub(crate) mod outbox;
pub(crate) mod queue;
pub(crate) mod report;
pub(crate) mod sse;
pub(crate) mod steps;
pub(crate) mod stream_client;
pub(crate) mod stream_run;
pub(crate) mod stream_steps;
pub(crate) mod supervise;
pub(crate) mod worker;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod outbox_tests;
#[cfg(test)]
mod stream_tests;

/// How the pipeline's callers retry a failed input or stream: what a real caller (a queue's
/// redelivery, a client's retry loop) does, quickly, so runs stay short.
pub(crate) fn caller_retries() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(10))
        .with_max_delay(std::time::Duration::from_millis(200))
        .with_max_times(12)
        .with_jitter()
}

/// A deterministic number from a seed and some labels (the fault schedule).
pub(crate) use idem_examples::seeded::chance;

/// One item of the batch.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Input {
    /// A stable id (the key).
    pub(crate) id: String,
    /// The article title.
    pub(crate) title: String,
    /// The target language.
    pub(crate) lang: String,
}

const TOPICS: &[&str] = &[
    "Idempotency keys for LLM calls",
    "Retries with exponential backoff",
    "Zombie tasks stuck in processing",
    "Fencing tokens explained",
    "Exactly-once is a lie, mostly",
    "Outbox pattern in practice",
    "Leases and heartbeats",
    "Why the first request saved twice",
];
const LANGS: &[&str] = &["en", "de", "fr"];

/// The batch: `n` inputs.
pub(crate) fn batch(n: usize) -> Vec<Input> {
    (0..n)
        .map(|i| Input {
            id: format!("in-{i:03}"),
            title: TOPICS[i % TOPICS.len()].to_owned(),
            lang: LANGS[(i / TOPICS.len()) % LANGS.len()].to_owned(),
        })
        .collect()
}
