//! The `api` example's service: an axum API with a paid endpoint, `POST /drafts`, that asks the
//! local model server (`pipeline/model_server.rs`, which bills per generation) for a draft,
//! behind `idem_runtime::http::IdempotencyLayer`; and two trivial endpoints, one behind the
//! layer and one bare, that the benchmark compares.

pub(crate) mod client;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use idem_runtime::http::IdempotencyLayer;
use idem_runtime::Idem;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::pipeline::model_client::ModelClient;

/// The body of `POST /drafts`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DraftRequest {
    /// What to write about.
    pub(crate) title: String,
    /// In which language.
    pub(crate) lang: String,
}

/// The answer of `POST /drafts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Draft {
    pub(crate) title: String,
    pub(crate) lang: String,
    pub(crate) text: String,
    pub(crate) tokens: u64,
}

/// The paid endpoint's state: the model client, and how often each tenant's key ran it (the
/// example's proof that no request was executed twice).
#[derive(Debug)]
pub(crate) struct Drafts {
    model: ModelClient,
    runs: Mutex<HashMap<String, u64>>,
}

impl Drafts {
    pub(crate) fn new(model: ModelClient) -> Arc<Self> {
        Arc::new(Self {
            model,
            runs: Mutex::new(HashMap::new()),
        })
    }

    /// `(executions, duplicate executions)`: handler runs, and runs beyond the first per key.
    pub(crate) fn executions(&self) -> (u64, u64) {
        let runs = self.runs.lock();
        let all = runs.values().sum();
        let duplicates = runs.values().map(|n| n.saturating_sub(1)).sum();
        (all, duplicates)
    }
}

/// The tenant a request comes from (a real service takes it from its verified token).
pub(crate) fn tenant(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-tenant")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `POST /drafts`: one paid generation.
async fn create_draft(
    State(drafts): State<Arc<Drafts>>,
    headers: HeaderMap,
    Json(request): Json<DraftRequest>,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let who = format!("{}/{key}", tenant(&headers).unwrap_or_default());
    *drafts.runs.lock().entry(who).or_default() += 1;
    let prompt = format!("{} ({})", request.title, request.lang);
    match drafts.model.generate(&prompt, None).await {
        Ok(generation) => {
            let draft = Draft {
                title: request.title,
                lang: request.lang,
                text: generation.text,
                tokens: generation.tokens,
            };
            (StatusCode::CREATED, Json(draft)).into_response()
        }
        // A 5xx is not recorded: the client's retry runs the generation again.
        Err(e) => (StatusCode::BAD_GATEWAY, e).into_response(),
    }
}

/// The benchmark's trivial handler: a small JSON body, as a create endpoint returns.
async fn created(body: axum::body::Bytes) -> Response {
    let answer = serde_json::json!({ "id": blake3::hash(&body).to_hex().as_str()[..16], "status": "created" });
    (StatusCode::CREATED, Json(answer)).into_response()
}

/// The layer as the example configures it: a key required on every POST, the tenant part of
/// the key.
pub(crate) fn layer(idem: &Idem) -> IdempotencyLayer {
    IdempotencyLayer::new(idem.clone())
        .operation("api")
        .required_for([Method::POST])
        .identity(|request| tenant(&request.headers))
}

/// The whole API: `/drafts` and `/bench/layered` behind the layer, `/bench/bare` and
/// `/health` without it.
pub(crate) fn router(idem: &Idem, drafts: Arc<Drafts>) -> Router {
    let layered = Router::new()
        .route("/drafts", post(create_draft))
        .route("/bench/layered", post(created))
        .with_state(drafts)
        .layer(layer(idem));
    let bare = Router::new()
        .route("/bench/bare", post(created))
        .route("/health", get(|| async { "ok" }));
    layered.merge(bare)
}
