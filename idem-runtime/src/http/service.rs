//! `Idempotency<S>`: the service the layer wraps around the inner one, and the life of one
//! request through it: the key and the body read, then one streaming call of the runtime whose
//! body is the inner service. The first request's response reaches its caller (all headers);
//! the recorded frames (head, then body) replay to every retry and reach live followers.

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{future, stream, StreamExt};
use http::header::HeaderValue;
use http::{request, response, HeaderMap, Request, Response};
use http_body::Body;
use parking_lot::Mutex;
use tokio::time::Instant;
use tower::Service;

use super::body::{
    boxed, chained, collect_limited, data_frames, from_stream, full, read_limited, Collected,
    ReadError, ResponseBody,
};
use super::layer::{Config, Conflict, MAX_KEY_LEN};
use super::problem::Problem;
use super::recorded::{head_of, Frame};
use crate::call::{Call, OnConflict};
use crate::error::{BoxError, Error};
use crate::stream::{StreamOptions, Streamed};

/// The service [`IdempotencyLayer`](super::IdempotencyLayer) wraps around `S`.
pub struct Idempotency<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> Idempotency<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }
}

impl<S: Clone> Clone for Idempotency<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S> fmt::Debug for Idempotency<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idempotency")
            .field("operation", &self.config.operation)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Idempotency<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body + From<Bytes> + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    /// Always ready: a replay never reaches the inner service, so its readiness is awaited
    /// only when a request runs it.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The clone in `self` was not polled ready; the one taken out is awaited ready before use.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(handle(self.config.clone(), inner, request))
    }
}

/// Why a request's call did not give a stream of frames.
enum Failure<E> {
    /// The inner service failed: its error is the layer's.
    Service(E),
    /// A response passed on as it is, not recorded (a `5xx`, a body over the limit).
    /// (Boxed: a response is large, and errors travel by value.)
    Unrecorded {
        response: Box<Response<ResponseBody>>,
        reason: &'static str,
    },
    /// The response body failed while it was read or streamed.
    Body(BoxError),
    /// idem's own error.
    Idem(Error),
}

impl<E> From<Error> for Failure<E> {
    fn from(error: Error) -> Self {
        Failure::Idem(error)
    }
}

/// What the record's failure says (the attempts log, `idem show`).
impl<E> fmt::Display for Failure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Service(_) => f.write_str("the HTTP service returned an error"),
            Failure::Unrecorded { response, reason } => write!(
                f,
                "the response ({}) was passed on unrecorded: {reason}",
                response.status()
            ),
            Failure::Body(e) => write!(f, "the response body failed: {e}"),
            Failure::Idem(e) => e.fmt(f),
        }
    }
}

/// The first request of a key leaves its response's full head here (with what the caller gets
/// of its body), before the runtime hands back the journaled stream.
type OwnerSlot = Arc<Mutex<Option<(response::Parts, bool)>>>;

async fn handle<S, ReqBody, ResBody>(
    config: Arc<Config>,
    inner: S,
    request: Request<ReqBody>,
) -> Result<Response<ResponseBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body + From<Bytes> + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    if !config.methods.contains(request.method()) {
        return pass(inner, request).await;
    }
    let path = request.uri().path().to_owned();
    let key = match idempotency_key(request.headers(), &config) {
        Ok(Some(key)) => key,
        Ok(None) if config.required_for.contains(request.method()) => {
            let detail = format!(
                "{} requests to this resource need an {} header",
                request.method(),
                config.key_header
            );
            return Ok(Problem::MissingKey.response(&detail, &path));
        }
        Ok(None) => return pass(inner, request).await,
        Err(detail) => return Ok(Problem::InvalidKey.response(detail, &path)),
    };
    let (parts, body) = request.into_parts();
    let body = match read_limited(body, config.max_request_bytes).await {
        Ok(body) => body,
        Err(ReadError::TooLarge) => {
            let detail = format!(
                "the request body is over {} bytes",
                config.max_request_bytes
            );
            return Ok(Problem::TooLarge.response(&detail, &path));
        }
        Err(ReadError::Failed(e)) => {
            return Ok(Problem::UnreadableBody.response(&e.to_string(), &path));
        }
    };
    // The rest runs on a task of its own: a client that hangs up (its timeout) does not cancel
    // the work it may have paid for, which is recorded for its retry. (A streamed response
    // still ends when its reader goes away: see the module's documentation.)
    let run = tokio::spawn(keyed(config, inner, parts, body, key, path.clone()));
    match run.await {
        Ok(response) => response,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Ok(Problem::StoreUnavailable.response("the server is shutting down", &path)),
    }
}

/// A request with a key and a body read: the call, and the response it gives.
async fn keyed<S, ReqBody, ResBody>(
    config: Arc<Config>,
    inner: S,
    parts: request::Parts,
    body: Bytes,
    key: String,
    path: String,
) -> Result<Response<ResponseBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body + From<Bytes> + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let identity = config.identity.as_ref().and_then(|of| of(&parts));
    let digest = blake3::hash(&body);
    let target = parts
        .uri
        .path_and_query()
        .map_or(path.as_str(), |p| p.as_str());
    // The key: whose request, to which resource, with which key; the fingerprint: that it is
    // the same request (method, target and body).
    let call = || {
        let (on_conflict, wait) = match config.conflict {
            Conflict::Reject => (OnConflict::Error, std::time::Duration::ZERO),
            Conflict::Wait(bound) => (OnConflict::Wait, bound),
        };
        let chunk_limit = config
            .max_response_bytes
            .saturating_mul(6)
            .saturating_add(1024);
        Call::new(config.operation.clone())
            .key(&(path.as_str(), identity.as_deref(), key.as_str()))
            .verify(&(parts.method.as_str(), target, digest.as_bytes()))
            .ttl(config.ttl)
            .lease(config.lease)
            .on_conflict(on_conflict)
            .wait(wait)
            .stream_options(StreamOptions::default().limits(1_000_000, 256 << 20, chunk_limit))
    };
    let deadline = match config.conflict {
        Conflict::Reject => None,
        Conflict::Wait(bound) => Some(Instant::now() + bound),
    };
    loop {
        let owner = OwnerSlot::default();
        let run = {
            let (config, inner, parts, body, owner) = (
                config.clone(),
                inner.clone(),
                parts.clone(),
                body.clone(),
                owner.clone(),
            );
            move || run_service(config, inner, parts, body, owner)
        };
        let frames = match config.idem.stream(call(), run).await {
            Ok(frames) => frames,
            Err(Failure::Unrecorded { response, .. }) => return Ok(*response),
            Err(Failure::Service(e)) => return Err(e),
            Err(Failure::Body(e)) => {
                tracing::error!(error = %e, "idem.http: the response body failed");
                let detail = "the service's response body failed";
                return Ok(Problem::Internal.response(detail, &path));
            }
            Err(Failure::Idem(e)) => return Ok(Problem::of_error(&e, &path)),
        };
        let owned = owner.lock().take();
        if let Some((head, stream)) = owned {
            return Ok(owner_response(head, stream, frames, &path).await);
        }
        match replay(&config, frames, deadline, &path).await {
            Some(response) => return Ok(response),
            // The request this one followed ended without a response to replay (a `5xx`, its
            // caller went away): within the wait, this one runs the service itself.
            None if deadline.is_some_and(|d| Instant::now() < d) => continue,
            None => {
                let detail = "the request with this Idempotency-Key that this one waited for \
                              ended without a recorded response; retry";
                return Ok(Problem::InProgress.response(detail, &path));
            }
        }
    }
}

/// Calls the inner service without the layer's help (other methods, no key where optional).
async fn pass<S, ReqBody, ResBody>(
    mut inner: S,
    request: Request<ReqBody>,
) -> Result<Response<ResponseBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    poll_fn(|cx| inner.poll_ready(cx)).await?;
    Ok(inner.call(request).await?.map(boxed))
}

/// The key header's value: `None` without one; a key of 1 to 255 visible ASCII characters,
/// given bare or as a structured-field string (`"..."`, the draft's form).
fn idempotency_key(headers: &HeaderMap, config: &Config) -> Result<Option<String>, &'static str> {
    let mut values = headers.get_all(&config.key_header).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("the request has more than one Idempotency-Key header");
    }
    let text = value
        .to_str()
        .map_err(|_| "the Idempotency-Key is not visible ASCII")?
        .trim();
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    if text.is_empty() {
        return Err("the Idempotency-Key is empty");
    }
    if text.len() > MAX_KEY_LEN {
        return Err("the Idempotency-Key is longer than 255 characters");
    }
    Ok(Some(text.to_owned()))
}

/// The body of the call: runs the inner service and turns its response into frames to record,
/// or into a failure that passes the response on unrecorded.
async fn run_service<S, ReqBody, ResBody>(
    config: Arc<Config>,
    mut inner: S,
    parts: request::Parts,
    body: Bytes,
    owner: OwnerSlot,
) -> Result<Streamed<Frame, Failure<S::Error>>, Failure<S::Error>>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Send + 'static,
    ReqBody: From<Bytes>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let request = Request::from_parts(parts, ReqBody::from(body));
    poll_fn(|cx| inner.poll_ready(cx))
        .await
        .map_err(Failure::Service)?;
    let (head, body) = inner
        .call(request)
        .await
        .map_err(Failure::Service)?
        .into_parts();
    if head.status.is_server_error() && !config.record_server_errors {
        return Err(Failure::Unrecorded {
            response: Box::new(Response::from_parts(head, boxed(body))),
            reason: "a server error (record_server_errors is off)",
        });
    }
    if (config.is_stream)(&head) {
        let recorded = Frame::head(&head, &config.replay_headers, true);
        *owner.lock() = Some((head, true));
        let frames = data_frames(body).map(|frame| frame.map(Frame::data).map_err(Failure::Body));
        return Ok(Streamed::new(stream::iter([Ok(recorded)]).chain(frames)));
    }
    match collect_limited(body, config.max_response_bytes).await {
        Collected::All(bytes) => {
            let recorded = Frame::head(&head, &config.replay_headers, false);
            *owner.lock() = Some((head, false));
            let mut frames = vec![Ok(recorded)];
            if !bytes.is_empty() {
                frames.push(Ok(Frame::data(bytes)));
            }
            Ok(Streamed::new(stream::iter(frames)))
        }
        Collected::Over(read, rest) => Err(Failure::Unrecorded {
            response: Box::new(Response::from_parts(head, chained(read, rest))),
            reason: "its body is over max_response_bytes",
        }),
        Collected::Failed(e) => Err(Failure::Body(e)),
    }
}

/// The first request's response: its own head; the body streamed as the service produces it
/// (a stream), or, for an ordinary response, once the record is written, so a client that saw
/// the response and retries is always replayed.
async fn owner_response<E: 'static>(
    head: response::Parts,
    stream: bool,
    frames: Streamed<Frame, Failure<E>>,
    path: &str,
) -> Response<ResponseBody> {
    if stream {
        return Response::from_parts(head, from_stream(body_frames(frames)));
    }
    let mut body = Vec::new();
    let mut frames = body_frames(frames);
    while let Some(frame) = frames.next().await {
        match frame {
            Ok(bytes) => body.push(bytes),
            Err(e) => {
                tracing::error!(error = %e, "idem.http: the response could not be recorded");
                return Problem::Internal.response("the response could not be recorded", path);
            }
        }
    }
    Response::from_parts(head, full(joined(body)))
}

/// The body frames of a recorded stream (the head skipped), as body data.
fn body_frames<E>(
    frames: Streamed<Frame, Failure<E>>,
) -> impl futures_util::Stream<Item = Result<Bytes, BoxError>> + Send + 'static
where
    E: 'static,
{
    frames.filter_map(|frame| {
        future::ready(match frame {
            Ok(frame) => frame.into_bytes().map(Ok),
            Err(e) => Some(Err(BoxError::from(e.to_string()))),
        })
    })
}

/// A recorded (or live) response for a retry: the recorded head, marked as a replay, and the
/// body. `None` when the request it followed ended without a response.
async fn replay<E>(
    config: &Config,
    mut frames: Streamed<Frame, Failure<E>>,
    deadline: Option<Instant>,
    path: &str,
) -> Option<Response<ResponseBody>>
where
    E: 'static,
{
    let first = match deadline {
        Some(deadline) => match tokio::time::timeout_at(deadline, frames.next()).await {
            Ok(first) => first,
            Err(_) => {
                let detail = "a request with this Idempotency-Key is still being processed; \
                              retry later";
                return Some(Problem::InProgress.response(detail, path));
            }
        },
        None => frames.next().await,
    };
    let (status, headers, stream) = match first {
        Some(Ok(Frame::Head {
            status,
            headers,
            stream,
        })) => (status, headers, stream),
        Some(Err(Failure::Idem(Error::StreamInterrupted { .. }))) => return None,
        Some(Err(Failure::Idem(e))) => return Some(Problem::of_error(&e, path)),
        Some(Err(e)) => {
            tracing::error!(error = %e, "idem.http: a recorded response could not be read");
            return Some(Problem::Internal.response("see the server's log", path));
        }
        Some(Ok(_)) | None => {
            tracing::error!("idem.http: a recorded response has no head");
            return Some(Problem::Internal.response("see the server's log", path));
        }
    };
    let Some((status, mut headers)) = head_of(status, &headers) else {
        tracing::error!("idem.http: a recorded response head does not parse");
        return Some(Problem::Internal.response("see the server's log", path));
    };
    headers.insert(
        config.replayed_header.clone(),
        HeaderValue::from_static("true"),
    );
    let body = if stream {
        from_stream(body_frames(frames))
    } else {
        let mut body = Vec::new();
        let mut frames = body_frames(frames);
        while let Some(frame) = frames.next().await {
            match frame {
                Ok(bytes) => body.push(bytes),
                Err(e) => {
                    tracing::error!(error = %e, "idem.http: a recorded response could not be read");
                    return Some(Problem::Internal.response("see the server's log", path));
                }
            }
        }
        full(joined(body))
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Some(response)
}

/// One buffer of body parts (without a copy for the usual single part).
fn joined(mut parts: Vec<Bytes>) -> Bytes {
    match parts.len() {
        0 => Bytes::new(),
        1 => parts.swap_remove(0),
        _ => Bytes::from(parts.concat()),
    }
}
