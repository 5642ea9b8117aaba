//! The kill -9 scenario every multi-process store test makes: a worker process whose body hangs
//! (`idem-test-worker hang ... job-1`) holds its key while alive; once killed, another worker
//! takes over within one lease and the attempts log shows the abandoned attempt.

use std::time::{Duration, Instant};

use idem_runtime::record::AttemptOutcome;
use idem_runtime::{Call, Error, Idem, OnConflict};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Starts `program args` and waits (30 s at most) for its first stdout line, `started`: the
/// worker's body is running.
pub async fn spawn_started(program: &str, args: &[&str]) -> Child {
    let mut child = Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the worker");
    let stdout = child.stdout.take().expect("piped stdout");
    let line = tokio::time::timeout(
        Duration::from_secs(30),
        BufReader::new(stdout).lines().next_line(),
    )
    .await
    .expect("the worker starts within 30 s")
    .expect("read its stdout");
    assert_eq!(line.as_deref(), Some("started"));
    child
}

/// `child` runs `hang` on key `job-1` of `op` with `lease_ms`, and has printed `started`;
/// `idem` (named `survivor`) is a handle on the same store.
pub async fn assert_killed_worker_is_taken_over(
    mut child: Child,
    idem: &Idem,
    op: &str,
    lease_ms: u64,
) {
    let call = || {
        Call::new(op.to_owned())
            .key(&"job-1")
            .lease(Duration::from_millis(lease_ms))
    };
    // Alive, its heartbeat holds the key well past one lease.
    tokio::time::sleep(Duration::from_millis(lease_ms * 2)).await;
    let busy: Result<String, Error> = idem
        .call(call().on_conflict(OnConflict::Error), || async {
            Ok("x".into())
        })
        .await;
    assert!(
        matches!(busy, Err(Error::InProgress { attempt: 1, .. })),
        "{busy:?}"
    );

    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("reaped");
    let killed_at = Instant::now();
    let value: String = idem
        .call(call(), || async { Ok::<_, Error>("re-executed".into()) })
        .await
        .expect("taken over");
    assert_eq!(value, "re-executed");
    let took = killed_at.elapsed();
    assert!(
        took <= Duration::from_millis(lease_ms + 1000),
        "taken over within one lease: {took:?}"
    );

    let log = idem.attempts(&call().key_value()).await.expect("attempts");
    let outcomes: Vec<_> = log.iter().map(|a| (a.attempt, a.outcome)).collect();
    assert_eq!(
        outcomes,
        [
            (1, AttemptOutcome::Abandoned),
            (2, AttemptOutcome::Completed)
        ]
    );
    assert!(log[0].worker.starts_with("test-worker/"));
    assert_eq!(log[1].worker, "survivor");
}

/// `child` runs `stream-hang` on key `stream-1` of `op` with `lease_ms`, and has printed
/// `started` (5 chunks journaled, the rest never produced). A duplicate follows the live stream;
/// after `kill -9` of the child it gets those 5 chunks, then `StreamInterrupted` once the lease
/// runs out; the next call takes over and generates the stream anew.
pub async fn assert_killed_stream_is_taken_over(
    mut child: Child,
    idem: &Idem,
    op: &str,
    lease_ms: u64,
) {
    use futures_util::StreamExt;
    let call = || {
        Call::new(op.to_owned())
            .key(&"stream-1")
            .lease(Duration::from_millis(lease_ms))
    };
    let not_run = || async {
        Err::<idem_runtime::Streamed<String, Error>, _>(Error::Config(
            "a follower never generates".into(),
        ))
    };
    let follower = idem.stream(call(), not_run).await.expect("follows");
    let follower = tokio::spawn(follower.collect::<Vec<_>>());
    tokio::time::sleep(Duration::from_millis(lease_ms)).await; // alive: the lease is renewed
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("reaped");
    let killed_at = Instant::now();
    let followed = tokio::time::timeout(Duration::from_secs(30), follower)
        .await
        .expect("the follower ends")
        .expect("joined");
    assert!(
        killed_at.elapsed() <= Duration::from_millis(lease_ms + 1500),
        "the follower ended within about one lease"
    );
    assert_eq!(followed.len(), 6, "{followed:?}");
    for (i, chunk) in followed.iter().take(5).enumerate() {
        assert_eq!(chunk.as_ref().ok(), Some(&format!("t{i}")));
    }
    assert!(
        matches!(
            followed[5],
            Err(Error::StreamInterrupted {
                attempt: 1,
                chunks: 5,
                ..
            })
        ),
        "{:?}",
        followed[5]
    );

    let anew = idem
        .stream(call(), || async {
            let tokens = ["new"].map(|t| Ok::<_, Error>(t.to_owned()));
            Ok::<_, Error>(idem_runtime::Streamed::new(futures_util::stream::iter(
                tokens,
            )))
        })
        .await
        .expect("taken over");
    let anew: Vec<_> = anew.collect().await;
    assert_eq!(anew.len(), 1);
    assert_eq!(anew[0].as_ref().ok().map(String::as_str), Some("new"));
    let log = idem.attempts(&call().key_value()).await.expect("attempts");
    let outcomes: Vec<_> = log.iter().map(|a| (a.attempt, a.outcome)).collect();
    assert_eq!(
        outcomes,
        [
            (1, AttemptOutcome::Abandoned),
            (2, AttemptOutcome::Completed)
        ]
    );
}
