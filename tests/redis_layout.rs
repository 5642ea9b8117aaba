//! The Redis store's key layout on a real server (format 2, see the store's `layout.rs`): a
//! miss writes its record hash and nothing else (no attempts log, which only a key with more
//! than one attempt has); a key's history stays bounded (its record's attempt and at most 99
//! past ones) and its log expires with its record; attempt numbers only grow.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use idem_runtime::record::AttemptOutcome;
use idem_runtime::{Call, Idem, Key};
use idem_tests::backends::{fresh_redis_prefix, redis_store_at, redis_url};
use idem_tests::conformance::TestError;

/// The record hash of `key` under `prefix` (the format's layout).
fn record_name(prefix: &str, key: &Key) -> String {
    let hex = key.to_hex();
    format!("{prefix}{{{}}}:{hex}", &hex[..4])
}

#[tokio::test]
async fn a_miss_writes_one_hash_and_history_is_bounded_and_expires_with_its_record() {
    let url = redis_url();
    let prefix = fresh_redis_prefix();
    let Some(store) = redis_store_at(&url, |b| b.prefix(&prefix)).await else {
        return;
    };
    let idem = Idem::builder(Arc::new(store))
        .cache_capacity(0)
        .worker("w")
        .build();
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let ttl = Duration::from_secs(600);
    let call = |name: &str| Call::new("layout.op".to_owned()).key(&name).ttl(ttl);

    idem.call(call("one"), || async { Ok::<_, TestError>(1_u8) })
        .await
        .unwrap();
    let one = record_name(&prefix, &call("one").key_value());
    let exists: u32 = redis::cmd("EXISTS")
        .arg(format!("{one}:log"))
        .arg(format!("{one}:chunks"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 0, "a miss writes no attempts log");
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&one)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        pttl > 0 && pttl <= 600_000,
        "the record expires at its ttl: {pttl}"
    );

    // More failed attempts than the history keeps, then a success.
    let failures = 105;
    for i in 0..failures {
        let r = idem
            .call(call("flaky"), || async move {
                Err::<u8, _>(TestError::Body(format!("failure {i}")))
            })
            .await;
        assert!(matches!(r, Err(TestError::Body(_))), "{r:?}");
    }
    idem.call(call("flaky"), || async { Ok::<_, TestError>(2_u8) })
        .await
        .unwrap();
    let key = call("flaky").key_value();
    let log = idem.attempts(&key).await.unwrap();
    assert_eq!(log.len(), 100, "the record's attempt and 99 past ones");
    let last = log.last().unwrap();
    assert_eq!(last.outcome, AttemptOutcome::Completed);
    assert!(log[..99]
        .iter()
        .all(|a| a.outcome == AttemptOutcome::Failed && a.ended_at.is_some()));
    assert_eq!(
        log[98].error.as_deref(),
        Some("body failed: failure 104"),
        "the newest past attempts are kept"
    );
    assert!(
        log.windows(2).all(|w| w[0].attempt < w[1].attempt),
        "attempt numbers only grow"
    );
    let record = idem.record(&key).await.unwrap().unwrap();
    assert_eq!(record.attempt, last.attempt);
    assert_eq!(record.lease_until, None, "a finished record has no lease");

    let flaky = record_name(&prefix, &key);
    let (record_ttl, log_ttl): (i64, i64) = redis::pipe()
        .cmd("PTTL")
        .arg(&flaky)
        .cmd("PTTL")
        .arg(format!("{flaky}:log"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(record_ttl > 0, "{record_ttl}");
    assert!(
        log_ttl > 0 && log_ttl <= record_ttl,
        "the log expires with its record: {log_ttl} vs {record_ttl}"
    );
}
