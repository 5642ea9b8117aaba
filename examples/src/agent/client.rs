//! The agent's HTTP client of the services (reqwest). Every request names its run
//! (`X-Agent-Run`), so the services count each run apart; search and notify pass an
//! `Idempotency-Key` when the agent has one (a step's `sub_key`), and retry a lost response
//! a few times, as any careful client does.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use serde_json::{json, Value};

use super::messages::{ChatRequest, Message, ToolCall, Turn};

/// A client of the services for one run.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    run: String,
}

impl Client {
    /// A client of the services at `base` for run `run`.
    pub(crate) fn new(base: &str, run: &str) -> reqwest::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            base: base.trim_end_matches('/').to_owned(),
            run: run.to_owned(),
        })
    }

    /// Asks the model for the next turn (billed, every time).
    pub(crate) async fn chat(&self, messages: &[Message]) -> Result<Turn, String> {
        let request = ChatRequest {
            messages: messages.to_vec(),
        };
        let response = self
            .http
            .post(format!("{}/v1/chat", self.base))
            .header("X-Agent-Run", &self.run)
            .json(&request)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("model: {e}"))?;
        response
            .json::<Turn>()
            .await
            .map_err(|e| format!("model answer: {e}"))
    }

    /// Runs a `search` tool call.
    pub(crate) async fn search(&self, call: &ToolCall, key: Option<&str>) -> Result<Value, String> {
        let body = json!({
            "call_id": call.id,
            "query": call.arguments["query"].as_str().unwrap_or_default(),
            "top_k": call.arguments["top_k"].as_u64().unwrap_or(3),
        });
        self.post_retrying("search", body, key).await
    }

    /// Runs a `notify` tool call.
    pub(crate) async fn notify(&self, call: &ToolCall, key: Option<&str>) -> Result<Value, String> {
        let body = json!({
            "call_id": call.id,
            "to": call.arguments["to"].as_str().unwrap_or_default(),
            "text": call.arguments["text"].as_str().unwrap_or_default(),
        });
        self.post_retrying("notify", body, key).await
    }

    /// POSTs `body` to `/{path}`, retrying a lost response with the same `Idempotency-Key`
    /// (with none, the service cannot tell the retry from a new request).
    async fn post_retrying(
        &self,
        path: &str,
        body: Value,
        key: Option<&str>,
    ) -> Result<Value, String> {
        let url = format!("{}/{path}", self.base);
        (|| async {
            let mut request = self
                .http
                .post(&url)
                .header("X-Agent-Run", &self.run)
                .json(&body);
            if let Some(key) = key {
                request = request.header("Idempotency-Key", key);
            }
            request
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)?
                .json::<Value>()
                .await
        })
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(5))
                .with_max_delay(Duration::from_millis(50))
                .with_max_times(5),
        )
        .await
        .map_err(|e| format!("{path}: {e}"))
    }
}
