//! `Idempotency-Key` for HTTP services (feature `http`): a tower layer that runs each request
//! carrying the header as an idempotent call, keyed by the key, the path and the caller's
//! identity, following the IETF draft "The Idempotency-Key HTTP Header Field".
//!
//! - `layer.rs`: [`IdempotencyLayer`], the builder and its options ([`Conflict`]).
//! - `service.rs`: [`Idempotency`], the service, and the life of one request.
//! - `recorded.rs`: what is recorded of a response (head, then body frames).
//! - `body.rs`: [`ResponseBody`], request and response bodies under their limits.
//! - `problem.rs`: the refusals, as RFC 9457 problem details.
//!
//! Every response is recorded through [`Idem::stream`](crate::Idem::stream): a first chunk
//! with its head, then its body (one chunk, or one per frame of a stream of server-sent
//! events). A request with a key runs on a task of its own, so a client that hangs up does not
//! cancel an ordinary response, which is recorded for its retry; a streamed response ends when
//! its first reader goes away (the attempt is cancelled, as dropping any stream cancels it),
//! and the next request generates it again.
//!
//! ```
//! use axum::{routing::post, Router};
//! use http::{Method, Request, StatusCode};
//! use http_body_util::BodyExt;
//! use idem_runtime::http::IdempotencyLayer;
//! use idem_runtime::Idem;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let idem = Idem::memory();
//! let runs = Arc::new(AtomicU32::new(0));
//! let counter = runs.clone();
//! let app = Router::new()
//!     .route("/drafts", post(move |body: String| async move {
//!         let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
//!         (StatusCode::CREATED, format!("draft {n} of {body}"))
//!     }))
//!     .layer(
//!         IdempotencyLayer::new(idem.clone())
//!             .required_for([Method::POST])
//!             .identity(|req| req.headers.get("x-tenant")?.to_str().ok().map(str::to_owned)),
//!     );
//!
//! let request = |key: Option<&str>, body: &'static str| {
//!     let mut r = Request::post("/drafts").header("x-tenant", "acme");
//!     if let Some(key) = key {
//!         r = r.header("idempotency-key", key);
//!     }
//!     r.body(axum::body::Body::from(body)).unwrap()
//! };
//! let first = app.clone().oneshot(request(Some("k-1"), "tides")).await.unwrap();
//! assert_eq!(first.status(), StatusCode::CREATED);
//! let retry = app.clone().oneshot(request(Some("k-1"), "tides")).await.unwrap();
//! assert_eq!(retry.headers()["idempotent-replayed"], "true");
//! let body = retry.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(body, "draft 1 of tides"); // replayed: the handler ran once
//!
//! let changed = app.clone().oneshot(request(Some("k-1"), "reefs")).await.unwrap();
//! assert_eq!(changed.status(), StatusCode::UNPROCESSABLE_ENTITY);
//! let missing = app.clone().oneshot(request(None, "tides")).await.unwrap();
//! assert_eq!(missing.status(), StatusCode::BAD_REQUEST);
//! assert_eq!(runs.load(Ordering::SeqCst), 1);
//! # }
//! ```

mod body;
mod layer;
mod problem;
mod recorded;
mod service;

pub use self::body::ResponseBody;
pub use self::layer::{Conflict, IdempotencyLayer};
pub use self::service::Idempotency;
