//! The outbox refuses writes only inside an attempt the queue marked busy, and writes nothing
//! then.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::json;

use super::{app_db, outbox};

#[tokio::test]
async fn a_busy_attempt_writes_nothing_and_the_next_one_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = app_db::open(&dir.path().join("app.db")).await.unwrap();
    let event = json!({ "event": "draft_ready" });

    let busy = outbox::busy_while(true, outbox::push(&db, "in-000", 1, &event)).await;
    assert!(busy.unwrap_err().contains("outbox busy"));
    assert_eq!(app_db::tally(&db).await.unwrap().notifications, 0);

    let calm = outbox::busy_while(false, outbox::push(&db, "in-000", 1, &event)).await;
    assert!(calm.is_ok());
    // Outside any attempt (no scope at all) the outbox is not busy either.
    outbox::push(&db, "in-001", 2, &event).await.unwrap();
    assert_eq!(app_db::tally(&db).await.unwrap().notifications, 2);
}
