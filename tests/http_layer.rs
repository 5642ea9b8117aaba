//! The `Idempotency-Key` layer against a real axum server and reqwest, on the memory, SQLite
//! and PostgreSQL stores (PostgreSQL: `IDEM_TEST_POSTGRES_URL`, a fresh schema per test;
//! skipped loudly when unreachable, except under `CI=true`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use idem_tests::backends;

macro_rules! http_suite {
    ($backend:ident; $($scenario:ident),+ $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    let Some(backend) = idem_tests::backends::$backend().await else { return };
                    idem_tests::http_layer::$scenario(&backend).await;
                }
            )+
        }
    };
    ($($backend:ident),+) => {$(
        http_suite!($backend;
            retry_replays_the_recorded_response,
            missing_or_invalid_key_is_400,
            concurrent_duplicate_is_409,
            concurrent_duplicates_wait_when_configured,
            changed_request_is_422,
            tenants_never_share_responses,
            server_errors_are_not_recorded_by_default,
            body_limits,
            event_stream_is_recorded_and_replayed,
            duplicate_joins_a_live_event_stream,
            client_hanging_up_does_not_cancel_the_work,
            waiting_duplicate_of_a_server_error_runs_itself,
            two_instances_share_their_records,
        );
    )+};
}

http_suite!(memory, sqlite, postgres);

/// A new server process on the same SQLite file replays the old one's responses.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_server_replays_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("idem.db").display());
    idem_tests::http_layer::restarted_server_replays(async || {
        idem_runtime::Idem::open(&url).await.unwrap()
    })
    .await;
}

/// The same on PostgreSQL, two handles on one schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_server_replays_on_postgres() {
    let schema = backends::fresh_postgres_schema();
    if backends::postgres_store(&schema, |b| b).await.is_none() {
        return;
    }
    let url = backends::postgres_test_url(&schema, 4);
    idem_tests::http_layer::restarted_server_replays(async || {
        idem_runtime::Idem::open(&url).await.unwrap()
    })
    .await;
}
