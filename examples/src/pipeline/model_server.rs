//! A local HTTP "model server" that bills tokens per generation, with a seeded fault schedule:
//! sometimes it does the work, bills it, and closes the socket without answering (the seed-000
//! incident); sometimes it is slower than the client's timeout (it still bills, late). Like
//! many real providers it does NOT deduplicate by `Idempotency-Key` unless asked to.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::chance;

/// What the server does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Bill, then close the connection without a response.
    DropAfterBilling,
    /// Take longer than any sane client timeout (and bill at the end).
    Slow,
}

/// The billing meter, shared with the report.
#[derive(Debug, Default)]
pub(crate) struct Meter {
    /// Generations billed.
    pub(crate) calls: AtomicU64,
    /// Tokens billed.
    pub(crate) tokens: AtomicU64,
    /// Requests whose connection was dropped after billing.
    pub(crate) dropped: AtomicU64,
    /// Requests slower than the client's timeout.
    pub(crate) slow: AtomicU64,
    /// Requests answered from the `Idempotency-Key` cache (only with dedup on).
    pub(crate) deduplicated: AtomicU64,
    /// Requests being worked on right now.
    pub(crate) in_flight: AtomicU64,
}

#[derive(Debug)]
struct State {
    seed: u64,
    dedup: bool,
    drop_pct: u64,
    slow_pct: u64,
    meter: Arc<Meter>,
    /// How many requests each prompt has had (the fault schedule's clock).
    seen: Mutex<HashMap<String, u64>>,
    keys: Mutex<HashSet<String>>,
}

/// A running server.
#[derive(Debug)]
pub(crate) struct ModelServer {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// Its billing meter.
    pub(crate) meter: Arc<Meter>,
}

impl ModelServer {
    /// Starts a server on 127.0.0.1 (ephemeral port).
    pub(crate) async fn start(
        seed: u64,
        dedup: bool,
        drop_pct: u64,
        slow_pct: u64,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let meter = Arc::new(Meter::default());
        let state = Arc::new(State {
            seed,
            dedup,
            drop_pct,
            slow_pct,
            meter: meter.clone(),
            seen: Mutex::new(HashMap::new()),
            keys: Mutex::new(HashSet::new()),
        });
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, state.clone()));
            }
        });
        Ok(Self { addr, meter })
    }

    /// Waits until no request is being worked on (slow ones still bill after their client left).
    pub(crate) async fn settle(&self) {
        for _ in 0..400 {
            if self.meter.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Reads one HTTP/1.1 request: (headers, body).
pub(crate) async fn read_request(stream: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len = header(&head, "content-length")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            let mut body = buf[end + 4..].to_vec();
            while body.len() < len {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
            return Ok((head, body));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A header's value (case-insensitive name).
pub(crate) fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn serve(mut stream: TcpStream, state: Arc<State>) {
    let Ok((head, body)) = read_request(&mut stream).await else {
        return;
    };
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let prompt = request["prompt"].as_str().unwrap_or_default().to_owned();
    let key = header(&head, "idempotency-key").map(str::to_owned);
    let meter = &state.meter;

    let n = {
        let mut seen = state.seen.lock();
        let n = seen.entry(prompt.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let roll = chance(state.seed, &["fault", &prompt, &n.to_string()]) % 100;
    let fault = if roll < state.drop_pct {
        Fault::DropAfterBilling
    } else if roll < state.drop_pct + state.slow_pct {
        Fault::Slow
    } else {
        Fault::None
    };
    let tokens = 180 + chance(state.seed, &["tokens", &prompt]) % 120;
    let text = format!("Draft for {prompt:?}: {} tokens of prose.", tokens);

    if state.dedup {
        if let Some(k) = &key {
            if !state.keys.lock().insert(k.clone()) {
                meter.deduplicated.fetch_add(1, Ordering::SeqCst);
                respond(&mut stream, &text, tokens).await;
                return;
            }
        }
    }

    meter.in_flight.fetch_add(1, Ordering::SeqCst);
    let work = 15 + chance(state.seed, &["latency", &prompt, &n.to_string()]) % 25;
    let work = if fault == Fault::Slow { 600 } else { work };
    tokio::time::sleep(Duration::from_millis(work)).await;
    meter.calls.fetch_add(1, Ordering::SeqCst);
    meter.tokens.fetch_add(tokens, Ordering::SeqCst);
    meter.in_flight.fetch_sub(1, Ordering::SeqCst);
    match fault {
        Fault::DropAfterBilling => {
            meter.dropped.fetch_add(1, Ordering::SeqCst);
            drop(stream); // billed, and the response is lost
        }
        Fault::Slow => {
            meter.slow.fetch_add(1, Ordering::SeqCst);
            respond(&mut stream, &text, tokens).await;
        }
        Fault::None => respond(&mut stream, &text, tokens).await,
    }
}

async fn respond(stream: &mut TcpStream, text: &str, tokens: u64) {
    let body = serde_json::json!({ "text": text, "tokens": tokens }).to_string();
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The client side: one POST with a timeout, over a fresh connection.
#[derive(Debug, Clone)]
pub(crate) struct ModelClient {
    /// `host:port` of the server.
    pub(crate) addr: String,
    /// The longest the client waits for an answer.
    pub(crate) timeout: Duration,
}

/// A generation.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Generation {
    /// The text.
    pub(crate) text: String,
    /// Tokens billed for it.
    pub(crate) tokens: u64,
}

impl ModelClient {
    /// Generates text for `prompt`, passing `idempotency_key` as an `Idempotency-Key` header.
    pub(crate) async fn generate(
        &self,
        prompt: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Generation, String> {
        let call = async {
            let mut stream = TcpStream::connect(&self.addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let body = serde_json::json!({ "prompt": prompt }).to_string();
            let key = idempotency_key
                .map(|k| format!("Idempotency-Key: {k}\r\n"))
                .unwrap_or_default();
            let request = format!(
                "POST /v1/generate HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{key}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                self.addr,
                body.len()
            );
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| format!("send: {e}"))?;
            let mut response = Vec::new();
            stream
                .read_to_end(&mut response)
                .await
                .map_err(|e| format!("receive: {e}"))?;
            if response.is_empty() {
                return Err(
                    "connection closed before a response (the model may have billed)".to_owned(),
                );
            }
            let text = String::from_utf8_lossy(&response);
            let (_, json) = text.split_once("\r\n\r\n").ok_or("malformed response")?;
            serde_json::from_str::<Generation>(json).map_err(|e| format!("bad response: {e}"))
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "model timed out after {:?} (it may still bill)",
                self.timeout
            )),
        }
    }
}
