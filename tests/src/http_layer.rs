//! The `Idempotency-Key` layer (`idem_runtime::http`) in front of a real axum server on
//! loopback, called with reqwest: every rule of the draft the layer keeps, on any store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures_util::StreamExt;
use idem_runtime::http::{Conflict, IdempotencyLayer};
use idem_runtime::Idem;
use tokio::sync::{mpsc, Mutex, Semaphore};

use crate::backends::Backend;

/// An axum server on 127.0.0.1, stopped when dropped.
#[derive(Debug)]
pub struct Server {
    /// `http://127.0.0.1:port`.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `app` on an ephemeral loopback port.
pub async fn serve(app: Router) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server { url, task }
}

/// How many times the handlers ran, and a gate a test can hold them at.
#[derive(Debug, Default)]
pub struct Handlers {
    /// Runs of the handlers.
    pub runs: AtomicU64,
    /// When set, a handler waits for a permit here before answering.
    gate: Option<Arc<Semaphore>>,
    /// What `/flaky` answers next (pops from the front; 201 when empty).
    flaky: Mutex<Vec<StatusCode>>,
    /// The events of `/events` when driven by the test (otherwise three fixed events).
    events: Mutex<Option<mpsc::Receiver<String>>>,
}

impl Handlers {
    fn ran(&self) -> u64 {
        self.runs.fetch_add(1, Ordering::SeqCst) + 1
    }

    async fn pass_gate(&self) {
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
    }

    fn count(&self) -> u64 {
        self.runs.load(Ordering::SeqCst)
    }
}

/// The service under test: `/drafts` (201 with a body echoing the request, a `Location`, a
/// cookie and a request id), `/flaky` (the statuses the test queues), `/big` (a body of the
/// size asked for), `/events` (server-sent events).
pub fn app(handlers: Arc<Handlers>, layer: IdempotencyLayer) -> Router {
    let drafts = {
        let h = handlers.clone();
        move |headers: HeaderMap, body: String| async move {
            // Counted before the gate, so a test sees the request has claimed its key.
            let n = h.ran();
            h.pass_gate().await;
            let tenant = headers
                .get("x-tenant")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned();
            (
                StatusCode::CREATED,
                [
                    (header::LOCATION, format!("/drafts/{n}")),
                    (header::SET_COOKIE, format!("session={n}")),
                    (header::HeaderName::from_static("x-run"), n.to_string()),
                ],
                axum::Json(serde_json::json!({ "draft": n, "of": body, "tenant": tenant })),
            )
        }
    };
    let flaky = {
        let h = handlers.clone();
        move || async move {
            let n = h.ran();
            h.pass_gate().await;
            let mut queue = h.flaky.lock().await;
            let status = if queue.is_empty() {
                StatusCode::CREATED
            } else {
                queue.remove(0)
            };
            (status, format!("run {n}"))
        }
    };
    let big = {
        let h = handlers.clone();
        move |body: String| async move {
            let n = h.ran();
            let size: usize = body.trim().parse().unwrap_or(0);
            format!("{n}:{}", "x".repeat(size))
        }
    };
    let events = {
        let h = handlers.clone();
        move || async move {
            let n = h.ran();
            let driven = h.events.lock().await.take();
            let frames: futures_util::stream::BoxStream<'static, String> = match driven {
                Some(rx) => tokio_stream_of(rx).boxed(),
                None => {
                    futures_util::stream::iter((0..3).map(move |i| format!("run {n} event {i}")))
                        .then(|e| async move {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            e
                        })
                        .boxed()
                }
            };
            let body = frames.map(|e| Ok::<_, std::convert::Infallible>(format!("data: {e}\n\n")));
            Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .header(header::CACHE_CONTROL, "no-cache")
                .body(Body::from_stream(body))
                .unwrap()
                .into_response()
        }
    };
    let patched = {
        let h = handlers.clone();
        move || async move { format!("patched {}", h.ran()) }
    };
    let read = {
        let h = handlers.clone();
        move || async move { format!("read {}", h.ran()) }
    };
    Router::new()
        .route("/drafts", post(drafts).patch(patched).get(read))
        .route("/flaky", post(flaky))
        .route("/big", post(big))
        .route("/events", post(events))
        .layer(layer)
}

fn tokio_stream_of(
    mut rx: mpsc::Receiver<String>,
) -> impl futures_util::Stream<Item = String> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A layer on `idem` with the test's usual options: keys required on POST, tenant from
/// `x-tenant`.
pub fn layer(idem: &Idem) -> IdempotencyLayer {
    IdempotencyLayer::new(idem.clone())
        .operation(crate::unique_op("http"))
        .required_for([Method::POST])
        .identity(|req| {
            req.headers
                .get("x-tenant")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
}

async fn start(
    backend: &Backend,
    handlers: Handlers,
    tune: impl FnOnce(IdempotencyLayer) -> IdempotencyLayer,
) -> (Server, Arc<Handlers>) {
    let handlers = Arc::new(handlers);
    let idem = backend.worker("http");
    let server = serve(app(handlers.clone(), tune(layer(&idem)))).await;
    (server, handlers)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn post_key(server: &Server, path: &str, key: Option<&str>, body: &str) -> reqwest::Response {
    let mut request = client()
        .post(format!("{}{path}", server.url))
        .body(body.to_owned());
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.unwrap()
}

fn replayed(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

/// Checks a problem+json refusal and returns its body.
async fn problem(response: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE.as_str()],
        "application/problem+json"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["type"]
        .as_str()
        .unwrap()
        .starts_with("urn:idem:problem:"));
    assert!(!body["title"].as_str().unwrap().is_empty());
    body
}

/// A retry gets the recorded status, the allowed headers and the body, marked as a replay; the
/// handler ran once; headers outside the allow-list (a cookie) reach the first caller only.
pub async fn retry_replays_the_recorded_response(backend: &Backend) {
    let (server, h) = start(backend, Handlers::default(), |l| l).await;
    let first = post_key(&server, "/drafts", Some("k-1"), "tides").await;
    assert_eq!(first.status(), 201);
    assert!(!replayed(&first));
    assert_eq!(first.headers()["set-cookie"], "session=1");
    assert_eq!(first.headers()["location"], "/drafts/1");
    let first_body = first.text().await.unwrap();
    for _ in 0..3 {
        let retry = post_key(&server, "/drafts", Some("k-1"), "tides").await;
        assert_eq!(retry.status(), 201);
        assert!(replayed(&retry));
        assert_eq!(retry.headers()["location"], "/drafts/1");
        assert_eq!(retry.headers()["content-type"], "application/json");
        assert!(
            retry.headers().get("set-cookie").is_none(),
            "cookies are never recorded"
        );
        assert!(
            retry.headers().get("x-run").is_none(),
            "not in the allow-list"
        );
        assert_eq!(retry.text().await.unwrap(), first_body);
    }
    // The key in the draft's structured-field form is the same key.
    let quoted = post_key(&server, "/drafts", Some("\"k-1\""), "tides").await;
    assert!(replayed(&quoted));
    assert_eq!(h.count(), 1);
    // Another key runs again.
    let other = post_key(&server, "/drafts", Some("k-2"), "tides").await;
    assert!(!replayed(&other));
    assert_eq!(h.count(), 2);
}

/// Missing key where required: 400; where optional (PATCH here) and for methods the layer does
/// not look at (GET), the request passes through and runs every time. Unusable keys: 400.
pub async fn missing_or_invalid_key_is_400(backend: &Backend) {
    let (server, h) = start(backend, Handlers::default(), |l| l).await;
    let missing = post_key(&server, "/drafts", None, "tides").await;
    let body = problem(missing, 400).await;
    assert_eq!(body["type"], "urn:idem:problem:idempotency-key-missing");
    assert_eq!(body["instance"], "/drafts");
    let long = "k".repeat(256);
    problem(post_key(&server, "/drafts", Some(&long), "x").await, 400).await;
    problem(post_key(&server, "/drafts", Some(""), "x").await, 400).await;
    let twice = client()
        .post(format!("{}/drafts", server.url))
        .header("idempotency-key", "a")
        .header("idempotency-key", "b")
        .body("x")
        .send()
        .await
        .unwrap();
    problem(twice, 400).await;
    assert_eq!(h.count(), 0, "no refused request reached the handler");
    let c = client();
    for _ in 0..2 {
        let patched = c
            .patch(format!("{}/drafts", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(patched.status(), 200);
        let read = c
            .get(format!("{}/drafts", server.url))
            .header("idempotency-key", "g")
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 200);
        assert!(!replayed(&read));
    }
    assert_eq!(h.count(), 4);
    // With a key, PATCH is deduplicated like POST.
    for _ in 0..2 {
        let patched = c
            .patch(format!("{}/drafts", server.url))
            .header("idempotency-key", "p-1")
            .send()
            .await
            .unwrap();
        assert_eq!(patched.text().await.unwrap(), "patched 5");
    }
    assert_eq!(h.count(), 5);
}

/// The same key while the first request runs: 409 (problem+json, `Retry-After`); after it,
/// the retry replays.
pub async fn concurrent_duplicate_is_409(backend: &Backend) {
    let gate = Arc::new(Semaphore::new(0));
    let handlers = Handlers {
        gate: Some(gate.clone()),
        ..Handlers::default()
    };
    let (server, h) = start(backend, handlers, |l| l).await;
    let server = Arc::new(server);
    let first = {
        let server = server.clone();
        tokio::spawn(async move { post_key(&server, "/drafts", Some("busy"), "tides").await })
    };
    while h.count() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let duplicate = post_key(&server, "/drafts", Some("busy"), "tides").await;
    let retry_after = duplicate.headers()["retry-after"].clone();
    let body = problem(duplicate, 409).await;
    assert_eq!(body["type"], "urn:idem:problem:idempotency-key-in-progress");
    assert_eq!(retry_after, "1");
    gate.add_permits(1);
    let first = first.await.unwrap();
    assert_eq!(first.status(), 201);
    let retry = post_key(&server, "/drafts", Some("busy"), "tides").await;
    assert!(replayed(&retry));
    assert_eq!(h.count(), 1);
}

/// With `Conflict::Wait`, concurrent duplicates wait for the first response and replay it.
pub async fn concurrent_duplicates_wait_when_configured(backend: &Backend) {
    let gate = Arc::new(Semaphore::new(0));
    let handlers = Handlers {
        gate: Some(gate.clone()),
        ..Handlers::default()
    };
    let (server, h) = start(backend, handlers, |l| {
        l.on_conflict(Conflict::Wait(Duration::from_secs(20)))
    })
    .await;
    let server = Arc::new(server);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            let r = post_key(&server, "/drafts", Some("together"), "tides").await;
            let replay = replayed(&r);
            (r.status().as_u16(), replay, r.text().await.unwrap())
        }));
    }
    while h.count() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Let the duplicates arrive and start waiting, then let the first one answer.
    tokio::time::sleep(Duration::from_millis(200)).await;
    gate.add_permits(1);
    let mut bodies = Vec::new();
    let mut replays = 0;
    for task in tasks {
        let (status, replay, body) = task.await.unwrap();
        assert_eq!(status, 201);
        replays += u32::from(replay);
        bodies.push(body);
    }
    assert_eq!(h.count(), 1);
    assert_eq!(replays, 7);
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
}

/// The same key with another body, method or query: 422, and the handler does not run. The
/// same key on another path is another request.
pub async fn changed_request_is_422(backend: &Backend) {
    let (server, h) = start(backend, Handlers::default(), |l| l).await;
    assert_eq!(
        post_key(&server, "/drafts", Some("k"), "tides")
            .await
            .status(),
        201
    );
    let body = problem(post_key(&server, "/drafts", Some("k"), "reefs").await, 422).await;
    assert_eq!(body["type"], "urn:idem:problem:idempotency-key-reused");
    let patched = client()
        .patch(format!("{}/drafts", server.url))
        .header("idempotency-key", "k")
        .body("tides")
        .send()
        .await
        .unwrap();
    problem(patched, 422).await;
    problem(
        post_key(&server, "/drafts?lang=fr", Some("k"), "tides").await,
        422,
    )
    .await;
    assert_eq!(h.count(), 1);
    // Same key, other resource: its own record.
    let flaky = post_key(&server, "/flaky", Some("k"), "tides").await;
    assert_eq!(flaky.status(), 201);
    assert!(!replayed(&flaky));
    assert_eq!(h.count(), 2);
    // And the original request still replays.
    assert!(replayed(
        &post_key(&server, "/drafts", Some("k"), "tides").await
    ));
}

/// Two tenants using the same key each get their own response, never the other's.
pub async fn tenants_never_share_responses(backend: &Backend) {
    let (server, h) = start(backend, Handlers::default(), |l| l).await;
    let c = client();
    let call = |tenant: &'static str| {
        c.post(format!("{}/drafts", server.url))
            .header("idempotency-key", "shared")
            .header("x-tenant", tenant)
            .body("tides")
            .send()
    };
    let a: serde_json::Value = call("acme").await.unwrap().json().await.unwrap();
    let b: serde_json::Value = call("globex").await.unwrap().json().await.unwrap();
    assert_eq!(a["tenant"], "acme");
    assert_eq!(b["tenant"], "globex");
    assert_eq!(h.count(), 2);
    let a2 = call("acme").await.unwrap();
    assert!(replayed(&a2));
    assert_eq!(a2.json::<serde_json::Value>().await.unwrap(), a);
    let b2: serde_json::Value = call("globex").await.unwrap().json().await.unwrap();
    assert_eq!(b2, b);
    assert_eq!(h.count(), 2);
}

/// A 5xx is passed on and not recorded (the retry runs again); 4xx are recorded; with
/// `record_server_errors` a 5xx replays too.
pub async fn server_errors_are_not_recorded_by_default(backend: &Backend) {
    let (server, h) = start(backend, Handlers::default(), |l| l).await;
    h.flaky
        .lock()
        .await
        .extend([StatusCode::SERVICE_UNAVAILABLE, StatusCode::BAD_REQUEST]);
    let first = post_key(&server, "/flaky", Some("f"), "").await;
    assert_eq!(first.status(), 503);
    assert_eq!(first.text().await.unwrap(), "run 1");
    let second = post_key(&server, "/flaky", Some("f"), "").await;
    assert_eq!(second.status(), 400);
    assert!(!replayed(&second));
    let third = post_key(&server, "/flaky", Some("f"), "").await;
    assert_eq!(third.status(), 400, "a 4xx is recorded and replayed");
    assert!(replayed(&third));
    assert_eq!(third.text().await.unwrap(), "run 2");
    assert_eq!(h.count(), 2);

    let (server, h) = start(backend, Handlers::default(), |l| {
        l.record_server_errors(true)
    })
    .await;
    h.flaky.lock().await.push(StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        post_key(&server, "/flaky", Some("f"), "").await.status(),
        500
    );
    let again = post_key(&server, "/flaky", Some("f"), "").await;
    assert_eq!(again.status(), 500);
    assert!(replayed(&again));
    assert_eq!(h.count(), 1);
}

/// A request body over the limit: 413, the handler does not run. A response body over the
/// recording limit reaches its caller whole, but is not recorded: the retry runs again.
pub async fn body_limits(backend: &Backend) {
    let (server, h) = start(backend, Handlers::default(), |l| {
        l.max_request_bytes(64).max_response_bytes(1000)
    })
    .await;
    let body = problem(
        post_key(&server, "/drafts", Some("b"), &"x".repeat(65)).await,
        413,
    )
    .await;
    assert_eq!(body["type"], "urn:idem:problem:request-body-too-large");
    assert_eq!(h.count(), 0);
    let small = post_key(&server, "/big", Some("small"), "900")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(small.len(), 2 + 900);
    assert_eq!(
        post_key(&server, "/big", Some("small"), "900")
            .await
            .text()
            .await
            .unwrap(),
        small
    );
    assert_eq!(h.count(), 1);
    let big = post_key(&server, "/big", Some("big"), "5000")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(big, format!("2:{}", "x".repeat(5000)));
    let again = post_key(&server, "/big", Some("big"), "5000").await;
    assert!(!replayed(&again));
    assert_eq!(
        again.text().await.unwrap(),
        format!("3:{}", "x".repeat(5000))
    );
    assert_eq!(h.count(), 3);
}

async fn read_events(response: reqwest::Response) -> Vec<String> {
    let mut text = String::new();
    let mut response = response;
    while let Some(chunk) = response.chunk().await.unwrap() {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A server-sent events response is recorded frame by frame and replayed with its head.
pub async fn event_stream_is_recorded_and_replayed(backend: &Backend) {
    let (server, h) = start(backend, Handlers::default(), |l| l).await;
    let first = post_key(&server, "/events", Some("s"), "").await;
    assert_eq!(first.headers()["content-type"], "text/event-stream");
    let events = read_events(first).await;
    assert_eq!(
        events,
        [
            "data: run 1 event 0",
            "data: run 1 event 1",
            "data: run 1 event 2"
        ]
    );
    let retry = post_key(&server, "/events", Some("s"), "").await;
    assert!(replayed(&retry));
    assert_eq!(retry.headers()["content-type"], "text/event-stream");
    assert_eq!(retry.headers()["cache-control"], "no-cache");
    assert_eq!(read_events(retry).await, events);
    assert_eq!(h.count(), 1);
}

/// A duplicate arriving while the first request's event stream is being written joins it: it
/// gets the events so far, then the live ones, and the handler runs once. Under the default
/// `Conflict::Reject`, the same duplicate is a 409.
pub async fn duplicate_joins_a_live_event_stream(backend: &Backend) {
    let (tx, rx) = mpsc::channel(16);
    let handlers = Handlers {
        events: Mutex::new(Some(rx)),
        ..Handlers::default()
    };
    let (server, h) = start(backend, handlers, |l| {
        l.on_conflict(Conflict::Wait(Duration::from_secs(20)))
    })
    .await;
    let mut first = post_key(&server, "/events", Some("live"), "").await;
    tx.send("one".into()).await.unwrap();
    let chunk = first.chunk().await.unwrap().unwrap();
    assert_eq!(&chunk[..], b"data: one\n\n");
    let joined = post_key(&server, "/events", Some("live"), "").await;
    assert!(replayed(&joined));
    assert_eq!(joined.headers()["content-type"], "text/event-stream");
    let joined = tokio::spawn(read_events(joined));
    tx.send("two".into()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    tx.send("three".into()).await.unwrap();
    drop(tx);
    let mut rest = read_events(first).await;
    rest.insert(0, "data: one".into());
    assert_eq!(rest, ["data: one", "data: two", "data: three"]);
    assert_eq!(joined.await.unwrap(), rest);
    assert_eq!(h.count(), 1);
    assert_eq!(
        read_events(post_key(&server, "/events", Some("live"), "").await).await,
        rest
    );

    // Under the default, a duplicate of a stream still being written is refused.
    let (tx, rx) = mpsc::channel(16);
    let handlers = Handlers {
        events: Mutex::new(Some(rx)),
        ..Handlers::default()
    };
    let (server, _h) = start(backend, handlers, |l| l).await;
    let first = post_key(&server, "/events", Some("live"), "").await;
    problem(post_key(&server, "/events", Some("live"), "").await, 409).await;
    drop(tx);
    assert!(read_events(first).await.is_empty());
}

/// A server restarted on the same store replays what the old one recorded (`reopen` gives a
/// new handle on the same database, as a new process would open it).
pub async fn restarted_server_replays(reopen: impl AsyncFn() -> Idem) {
    let op = crate::unique_op("http-restart");
    let handlers = Arc::new(Handlers::default());
    let first_body = {
        let idem = reopen().await;
        let server = serve(app(handlers.clone(), layer(&idem).operation(op.clone()))).await;
        let first = post_key(&server, "/drafts", Some("r"), "tides").await;
        assert_eq!(first.status(), 201);
        let body = first.text().await.unwrap();
        drop(server);
        drop(idem);
        body
    };
    let handlers = Arc::new(Handlers::default());
    let idem = reopen().await;
    let server = serve(app(handlers.clone(), layer(&idem).operation(op))).await;
    let retry = post_key(&server, "/drafts", Some("r"), "tides").await;
    assert!(replayed(&retry));
    assert_eq!(retry.headers()["location"], "/drafts/1");
    assert_eq!(retry.text().await.unwrap(), first_body);
    assert_eq!(
        handlers.count(),
        0,
        "the new server did not run the handler"
    );
}

/// A client that hangs up (its timeout) while the handler runs does not cancel it: the
/// response is recorded and its retry replays it; the handler ran once.
pub async fn client_hanging_up_does_not_cancel_the_work(backend: &Backend) {
    let gate = Arc::new(Semaphore::new(0));
    let handlers = Handlers {
        gate: Some(gate.clone()),
        ..Handlers::default()
    };
    let (server, h) = start(backend, handlers, |l| l).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let lost = impatient
        .post(format!("{}/drafts", server.url))
        .header("idempotency-key", "hung-up")
        .body("tides")
        .send()
        .await;
    assert!(lost.unwrap_err().is_timeout());
    assert_eq!(h.count(), 1);
    gate.add_permits(1);
    let mut retry = post_key(&server, "/drafts", Some("hung-up"), "tides").await;
    for _ in 0..200 {
        if retry.status() != 409 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        retry = post_key(&server, "/drafts", Some("hung-up"), "tides").await;
    }
    assert_eq!(retry.status(), 201);
    assert!(replayed(&retry));
    assert_eq!(h.count(), 1);
}

/// With `Conflict::Wait`, a duplicate waiting for a request that ends in an unrecorded `5xx`
/// does not get that error replayed: it runs the handler itself and gets its own response.
pub async fn waiting_duplicate_of_a_server_error_runs_itself(backend: &Backend) {
    let gate = Arc::new(Semaphore::new(0));
    let handlers = Handlers {
        gate: Some(gate.clone()),
        ..Handlers::default()
    };
    let (server, h) = start(backend, handlers, |l| {
        l.on_conflict(Conflict::Wait(Duration::from_secs(20)))
    })
    .await;
    h.flaky.lock().await.push(StatusCode::SERVICE_UNAVAILABLE);
    let server = Arc::new(server);
    let first = {
        let server = server.clone();
        tokio::spawn(async move { post_key(&server, "/flaky", Some("w"), "").await })
    };
    while h.count() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let duplicate = {
        let server = server.clone();
        tokio::spawn(async move { post_key(&server, "/flaky", Some("w"), "").await })
    };
    // The duplicate is waiting on the first request's record.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.count(), 1);
    gate.add_permits(2);
    let first = first.await.unwrap();
    assert_eq!(first.status(), 503);
    assert_eq!(first.text().await.unwrap(), "run 1");
    let duplicate = duplicate.await.unwrap();
    assert_eq!(duplicate.status(), 201);
    assert!(!replayed(&duplicate));
    assert_eq!(duplicate.text().await.unwrap(), "run 2");
    assert_eq!(h.count(), 2);
    let retry = post_key(&server, "/flaky", Some("w"), "").await;
    assert!(replayed(&retry));
    assert_eq!(retry.text().await.unwrap(), "run 2");
}

/// Two server instances on one store (behind a load balancer): a retry reaching the other
/// instance replays, a duplicate reaching it while the first runs is refused, and with
/// `Conflict::Wait` it joins the other instance's live event stream.
pub async fn two_instances_share_their_records(backend: &Backend) {
    let op = crate::unique_op("http-two");
    let (tx, rx) = mpsc::channel(16);
    let handlers_a = Arc::new(Handlers {
        events: Mutex::new(Some(rx)),
        ..Handlers::default()
    });
    let handlers_b = Arc::new(Handlers::default());
    let tune = |idem: &Idem| {
        layer(idem)
            .operation(op.clone())
            .on_conflict(Conflict::Wait(Duration::from_secs(20)))
    };
    let a = serve(app(handlers_a.clone(), tune(&backend.worker("a")))).await;
    let b = serve(app(handlers_b.clone(), tune(&backend.worker("b")))).await;

    let first = post_key(&a, "/drafts", Some("lb"), "tides").await;
    let first_body = first.text().await.unwrap();
    let retry = post_key(&b, "/drafts", Some("lb"), "tides").await;
    assert!(replayed(&retry));
    assert_eq!(retry.text().await.unwrap(), first_body);
    problem(post_key(&b, "/drafts", Some("lb"), "reefs").await, 422).await;

    let mut live = post_key(&a, "/events", Some("lb-live"), "").await;
    tx.send("one".into()).await.unwrap();
    assert_eq!(&live.chunk().await.unwrap().unwrap()[..], b"data: one\n\n");
    let joined = post_key(&b, "/events", Some("lb-live"), "").await;
    assert!(replayed(&joined));
    let joined = tokio::spawn(read_events(joined));
    tx.send("two".into()).await.unwrap();
    drop(tx);
    let mut events = read_events(live).await;
    events.insert(0, "data: one".into());
    assert_eq!(joined.await.unwrap(), events);
    assert_eq!(handlers_a.count(), 2);
    assert_eq!(handlers_b.count(), 0, "instance b never ran a handler");
}
