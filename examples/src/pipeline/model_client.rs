//! The model's HTTP client (reqwest): one POST per generation, with a timeout. A timeout or a
//! dropped connection does not mean the model did not bill: the errors say so.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::crash::CrashPoint;

/// The request body of `POST /v1/generate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GenerateRequest {
    /// What to write about.
    pub(crate) prompt: String,
}

/// A generation: the response body of `POST /v1/generate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Generation {
    /// The text.
    pub(crate) text: String,
    /// Tokens billed for it.
    pub(crate) tokens: u64,
}

/// A client of the model server.
#[derive(Debug, Clone)]
pub(crate) struct ModelClient {
    http: reqwest::Client,
    endpoint: String,
    timeout: Duration,
    crash: Option<Arc<CrashPoint>>,
}

impl ModelClient {
    /// A client of the server at `base_url` (`http://host:port`) that waits at most `timeout`
    /// for each answer.
    pub(crate) fn new(base_url: &str, timeout: Duration) -> reqwest::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder().timeout(timeout).build()?,
            endpoint: format!("{}/v1/generate", base_url.trim_end_matches('/')),
            timeout,
            crash: None,
        })
    }

    /// The demo's `--crash-after`: the process may die right after an answer, once the model
    /// has billed and before the step that called it records its result.
    pub(crate) fn with_crash_point(mut self, crash: Arc<CrashPoint>) -> Self {
        self.crash = Some(crash);
        self
    }

    /// Generates text for `prompt`, passing `idempotency_key` as an `Idempotency-Key` header.
    pub(crate) async fn generate(
        &self,
        prompt: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Generation, String> {
        let mut request = self.http.post(&self.endpoint).json(&GenerateRequest {
            prompt: prompt.to_owned(),
        });
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.map_err(|e| self.explain(&e))?;
        let response = response
            .error_for_status()
            .map_err(|e| format!("model: {e}"))?;
        let generation = response
            .json::<Generation>()
            .await
            .map_err(|e| self.explain(&e))?;
        if let Some(crash) = &self.crash {
            crash.maybe_crash();
        }
        Ok(generation)
    }

    /// Why a call failed, and whether the model may have billed for it anyway.
    fn explain(&self, e: &reqwest::Error) -> String {
        if e.is_timeout() {
            format!(
                "model timed out after {:?} (it may still bill)",
                self.timeout
            )
        } else if e.is_connect() {
            format!("connect: {e}")
        } else if e.is_decode() {
            format!("bad response: {e}")
        } else {
            "connection closed before a response (the model may have billed)".to_owned()
        }
    }
}
