//! `rediss://` (feature `redis-tls`): a throwaway `redis-server` serving TLS only, with a
//! certificate of a private CA made by `openssl` for the test. The store opens with that CA
//! (`idem_tls_ca`), runs a call and replays it; without the CA the open fails, typed.
#![cfg(feature = "redis-tls")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use idem_runtime::{Call, Error, Idem};
use idem_tests::redis_server::{free_port, redis_server_available};

fn openssl(dir: &Path, args: &[&str]) -> bool {
    Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A CA and a server certificate for 127.0.0.1 signed by it, in `dir`.
fn make_certificates(dir: &Path) -> bool {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=idem test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    ) && openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    ) && std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").is_ok()
        && openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                "san.ext",
                "-out",
                "server.crt",
            ],
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca() {
    if !redis_server_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    if !make_certificates(dir.path()) {
        if idem_tests::servers_required() {
            panic!("openssl is required (CI=true) to make the test's certificates");
        }
        eprintln!("\n*** SKIPPED: rediss test: cannot make certificates with openssl ***\n");
        return;
    }
    let port = free_port();
    let path = |f: &str| dir.path().join(f).display().to_string();
    let server = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args(["--tls-cert-file", &path("server.crt")])
        .args(["--tls-key-file", &path("server.key")])
        .args(["--tls-ca-cert-file", &path("ca.crt")])
        .args([
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _server = KillOnDrop(server);
    let begun = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            begun.elapsed() < Duration::from_secs(10),
            "redis-server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let url = format!("rediss://127.0.0.1:{port}");
    let untrusted = Idem::open(&url).await;
    assert!(
        matches!(untrusted, Err(Error::Open { .. })),
        "a server certificate of an unknown CA is refused: {untrusted:?}"
    );
    let idem = Idem::open(&format!("{url}?idem_tls_ca={}", path("ca.crt")))
        .await
        .unwrap();
    let op = idem_tests::unique_op("tls");
    let runs = std::sync::atomic::AtomicUsize::new(0);
    for _ in 0..2 {
        let v: u32 = idem
            .call(Call::new(op.clone()).key(&"k"), || async {
                runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok::<_, Error>(7)
            })
            .await
            .unwrap();
        assert_eq!(v, 7);
    }
    assert_eq!(runs.into_inner(), 1, "ran once, then replayed over TLS");
}

/// Kills the server this test started, however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
