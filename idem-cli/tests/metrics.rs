//! `idem stats --metrics URL` against a local HTTP server that answers with a fixed Prometheus
//! exposition: timestamps and labels on the sample lines, and a failing endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const BIN: &str = env!("CARGO_BIN_EXE_idem");

/// Counters as a process exposes them, each sample line with a timestamp (milliseconds) and
/// labels, including a label value with a space: 6 + 3 replays, 2 + 1 executions.
const EXPOSITION: &str = "\
# HELP idem_replays_total Calls answered from a recorded outcome.
# TYPE idem_replays_total counter
idem_replays_total{op=\"send mail\",source=\"cache\"} 6 1764522000000
idem_replays_total{op=\"draft\",source=\"store\"} 3 1764522000000
# HELP idem_executions_total Bodies run.
# TYPE idem_executions_total counter
idem_executions_total{op=\"send mail\"} 2 1764522000000
idem_executions_total{op=\"draft\"} 1 1764522000000
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1764521000 1764522000000
";

/// Serves `status` with `body` to every connection, on a free loopback port; returns its
/// address. Each request is read up to the end of its headers before the answer.
async fn serve(status: &'static str, body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0_u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    addr.to_string()
}

/// Runs the binary off the runtime's threads, so the server above keeps answering.
async fn idem(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .env_remove("IDEM_STORE")
            .args(["--store", "memory:"])
            .args(&args)
            .output()
            .expect("run idem")
    })
    .await
    .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_ratio_from_an_exposition_with_timestamps_and_labels() {
    let addr = serve("200 OK", EXPOSITION).await;
    let url = format!("http://{addr}/metrics");

    let out = idem(&["--json", "stats", "--metrics", &url]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["metrics"]["replays"], 9.0, "{v}");
    assert_eq!(v["metrics"]["executions"], 3.0, "{v}");
    assert_eq!(v["replay_ratio"], 0.75, "{v}");

    let out = idem(&["stats", "--metrics", &url]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("replay ratio:       75.0% (9 replays, 3 executions"),
        "{text}"
    );

    // Without a path, the endpoint's `/metrics` is read.
    let out = idem(&["--json", "stats", "--metrics", &format!("http://{addr}")]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["replay_ratio"], 0.75, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_endpoint_is_exit_1() {
    let addr = serve("404 Not Found", "no such page\n").await;
    let out = idem(&[
        "--json",
        "stats",
        "--metrics",
        &format!("http://{addr}/nowhere"),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("404"), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "metrics");

    // Nothing listens on port 1: the cause is named.
    let out = idem(&["stats", "--metrics", "http://127.0.0.1:1/metrics"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).to_lowercase().contains("connection refused"),
        "{}",
        stderr(&out)
    );

    let out = idem(&["stats", "--metrics", "https://127.0.0.1:1/metrics"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("http://"), "{}", stderr(&out));
}
