//! `IdempotencyLayer`: the builder users configure (methods, key header, identity, conflicts,
//! limits, what is recorded and replayed) and the tower `Layer` it is.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderName};
use http::{request, response, Method};

use super::service::Idempotency;
use crate::idem::Idem;

/// What a request does when another request with the same key is still being handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Conflict {
    /// Answer `409 Conflict` at once (the draft's rule). The default.
    Reject,
    /// Wait up to this long for the first request's response and replay it; a streamed
    /// (server-sent events) response is joined live. `409` when the bound runs out.
    Wait(Duration),
}

type Identity = dyn Fn(&request::Parts) -> Option<String> + Send + Sync;
type IsStream = dyn Fn(&response::Parts) -> bool + Send + Sync;

/// The layer's configuration, shared by every clone of the service.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) idem: Idem,
    pub(crate) operation: Cow<'static, str>,
    pub(crate) methods: Vec<Method>,
    pub(crate) required_for: Vec<Method>,
    pub(crate) key_header: HeaderName,
    pub(crate) identity: Option<Arc<Identity>>,
    pub(crate) conflict: Conflict,
    pub(crate) record_server_errors: bool,
    pub(crate) replay_headers: Vec<HeaderName>,
    pub(crate) max_request_bytes: usize,
    pub(crate) max_response_bytes: usize,
    pub(crate) replayed_header: HeaderName,
    pub(crate) is_stream: Arc<IsStream>,
    pub(crate) ttl: Duration,
    pub(crate) lease: Duration,
}

/// The longest `Idempotency-Key` accepted (Stripe's limit); a longer one is a `400`.
pub(crate) const MAX_KEY_LEN: usize = 255;

/// A tower [`Layer`](tower::Layer) that makes the requests it is configured for idempotent by
/// their `Idempotency-Key` header: the first request with a key runs the inner service and its
/// response is recorded; a retry gets the recorded response, marked `Idempotent-Replayed: true`.
///
/// The key a response is recorded under is the operation name, the request's path, the caller's
/// identity ([`IdempotencyLayer::identity`]) and the header's value, so one tenant never replays
/// another's response. The request's fingerprint (method, path with query, and a digest of the
/// body) is checked on every reuse of the key: a different request is `422`.
///
/// | builder method | default | meaning |
/// |---|---|---|
/// | [`methods`](Self::methods) | `POST`, `PATCH` | the methods the layer looks at; others pass through |
/// | [`required_for`](Self::required_for) | none | methods for which a missing key is `400` (otherwise the request passes through) |
/// | [`key_header`](Self::key_header) | `Idempotency-Key` | the header that carries the key |
/// | [`identity`](Self::identity) | none (one shared key space) | who is calling (tenant, auth subject), part of the key |
/// | [`on_conflict`](Self::on_conflict) | [`Conflict::Reject`] (`409`) | a duplicate of a running request: `409`, or wait (and join a stream) |
/// | [`record_server_errors`](Self::record_server_errors) | `false` | record `5xx` responses too (otherwise the next retry runs again) |
/// | [`replay_headers`](Self::replay_headers) | `content-type`, `content-language`, `location`, `etag`, `last-modified`, `cache-control` | the response headers recorded and replayed |
/// | [`max_request_bytes`](Self::max_request_bytes) | 1 MiB | the largest request body (`413` beyond) |
/// | [`max_response_bytes`](Self::max_response_bytes) | 1 MiB | the largest response body recorded (a larger one is passed on, not recorded) |
/// | [`replayed_header`](Self::replayed_header) | `Idempotent-Replayed` | the header (value `true`) marking a replay |
/// | [`stream_when`](Self::stream_when) | `content-type: text/event-stream` | which responses are recorded frame by frame and can be joined live |
/// | [`ttl`](Self::ttl), [`lease`](Self::lease) | 24 h, 30 s | as for any call |
/// | [`operation`](Self::operation) | `http` | the operation name the records carry |
#[derive(Clone)]
pub struct IdempotencyLayer {
    config: Config,
}

impl fmt::Debug for IdempotencyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("IdempotencyLayer")
            .field("operation", &c.operation)
            .field("methods", &c.methods)
            .field("required_for", &c.required_for)
            .field("key_header", &c.key_header)
            .field("identity", &c.identity.is_some())
            .field("conflict", &c.conflict)
            .field("record_server_errors", &c.record_server_errors)
            .field("replay_headers", &c.replay_headers)
            .field("max_request_bytes", &c.max_request_bytes)
            .field("max_response_bytes", &c.max_response_bytes)
            .finish_non_exhaustive()
    }
}

/// Whether a response is a stream of server-sent events.
fn is_event_stream(head: &response::Parts) -> bool {
    head.headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}

impl IdempotencyLayer {
    /// A layer recording responses in `idem`'s store, with the defaults of the table above.
    pub fn new(idem: Idem) -> Self {
        Self {
            config: Config {
                idem,
                operation: Cow::Borrowed("http"),
                methods: vec![Method::POST, Method::PATCH],
                required_for: Vec::new(),
                key_header: HeaderName::from_static("idempotency-key"),
                identity: None,
                conflict: Conflict::Reject,
                record_server_errors: false,
                replay_headers: [
                    header::CONTENT_TYPE,
                    header::CONTENT_LANGUAGE,
                    header::LOCATION,
                    header::ETAG,
                    header::LAST_MODIFIED,
                    header::CACHE_CONTROL,
                ]
                .to_vec(),
                max_request_bytes: 1 << 20,
                max_response_bytes: 1 << 20,
                replayed_header: HeaderName::from_static("idempotent-replayed"),
                is_stream: Arc::new(is_event_stream),
                ttl: Duration::from_secs(24 * 3600),
                lease: Duration::from_secs(30),
            },
        }
    }

    /// The methods the layer looks at (default `POST` and `PATCH`); requests with other methods
    /// pass through untouched.
    #[must_use]
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.config.methods = methods.into_iter().collect();
        self
    }

    /// The methods for which a request without the key header is refused with `400` (default
    /// none: such a request passes through, not deduplicated). A method listed here is also
    /// added to [`methods`](Self::methods).
    #[must_use]
    pub fn required_for(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.config.required_for = methods.into_iter().collect();
        for m in &self.config.required_for {
            if !self.config.methods.contains(m) {
                self.config.methods.push(m.clone());
            }
        }
        self
    }

    /// The header carrying the key (default `Idempotency-Key`).
    #[must_use]
    pub fn key_header(mut self, name: HeaderName) -> Self {
        self.config.key_header = name;
        self
    }

    /// Who is calling, from the request's head (a tenant header, the subject of a verified
    /// token put in the extensions by an authentication layer further out): part of the key, so
    /// two callers using the same `Idempotency-Key` never see each other's responses. `None` is
    /// a caller of its own (the anonymous one).
    #[must_use]
    pub fn identity<F>(mut self, identity: F) -> Self
    where
        F: Fn(&request::Parts) -> Option<String> + Send + Sync + 'static,
    {
        self.config.identity = Some(Arc::new(identity));
        self
    }

    /// What a duplicate does while the first request with its key is being handled (default
    /// [`Conflict::Reject`]: `409`).
    #[must_use]
    pub fn on_conflict(mut self, conflict: Conflict) -> Self {
        self.config.conflict = conflict;
        self
    }

    /// Record `5xx` responses too, and replay them (default off: a `5xx` is passed on and the
    /// key's next request runs the service again).
    #[must_use]
    pub fn record_server_errors(mut self, on: bool) -> Self {
        self.config.record_server_errors = on;
        self
    }

    /// The response headers recorded and replayed; the others reach the first caller only
    /// (`set-cookie`, say, is never stored).
    #[must_use]
    pub fn replay_headers(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.config.replay_headers = names.into_iter().collect();
        self
    }

    /// The largest request body read (default 1 MiB); a larger one is refused with `413`.
    #[must_use]
    pub fn max_request_bytes(mut self, limit: usize) -> Self {
        self.config.max_request_bytes = limit;
        self
    }

    /// The largest response body recorded (default 1 MiB). A larger response reaches its
    /// caller but is not recorded, and the key's next request runs the service again. For a
    /// streamed response it bounds each frame: a frame whose encoding is over six times this
    /// ends the stream with [`Error::ChunkTooLarge`](crate::Error::ChunkTooLarge).
    #[must_use]
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.config.max_response_bytes = limit;
        self
    }

    /// The header, with value `true`, marking a replayed response (default
    /// `Idempotent-Replayed`).
    #[must_use]
    pub fn replayed_header(mut self, name: HeaderName) -> Self {
        self.config.replayed_header = name;
        self
    }

    /// Which responses are streams, recorded frame by frame as the first caller reads them and
    /// joined live by a duplicate (default: `content-type: text/event-stream`).
    #[must_use]
    pub fn stream_when<F>(mut self, is_stream: F) -> Self
    where
        F: Fn(&response::Parts) -> bool + Send + Sync + 'static,
    {
        self.config.is_stream = Arc::new(is_stream);
        self
    }

    /// How long a recorded response replays (default 24 h).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config.ttl = ttl;
        self
    }

    /// How long a crashed server's claim on a key holds (default 30 s; renewed while the
    /// request runs).
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease;
        self
    }

    /// The operation name the records carry (default `http`): two services sharing a store
    /// and paths keep apart by naming theirs.
    #[must_use]
    pub fn operation(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.config.operation = name.into();
        self
    }
}

impl<S> tower::Layer<S> for IdempotencyLayer {
    type Service = Idempotency<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Idempotency::new(inner, Arc::new(self.config.clone()))
    }
}
