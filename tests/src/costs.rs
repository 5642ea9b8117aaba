//! The cost ledger on every store: what a body reports it cost is kept in its attempt's log
//! line whatever the outcome, and every replay of the recorded outcome counts it as avoided.

use idem_runtime::{current, Call};

use crate::backends::Backend;
use crate::conformance::TestError;
use crate::unique_op;

/// A first attempt that fails after paying 30 tokens, a second that pays 100 tokens and
/// 0.25 usd and records its value, then three replays from the store and one from a cache:
/// spent 130 tokens and 0.25 usd, avoided 400 tokens and 1 usd in 4 replays, once flushed.
pub async fn costs_are_logged_and_replays_count_them_avoided(b: &Backend) {
    let idem = b.worker("w");
    let op = unique_op("costs");
    let call = || Call::new(op.clone()).key(&"draft-1");
    let key = call().key_value();
    let failed: Result<String, TestError> = idem
        .call(call(), || async {
            current().unwrap().add_cost("tokens", 30.0);
            Err(TestError::Body("the model timed out".into()))
        })
        .await;
    assert!(failed.is_err());
    let first: String = idem
        .call(call(), || async {
            let info = current().unwrap();
            info.add_cost("tokens", 60.0);
            info.add_cost("tokens", 40.0);
            info.add_cost("usd", 0.25);
            info.add_cost("usd", f64::NAN); // ignored
            Ok::<_, TestError>("a draft".to_owned())
        })
        .await
        .unwrap();
    assert_eq!(first, "a draft");
    for _ in 0..2 {
        let again: String = idem
            .call(call(), || async {
                Ok::<_, TestError>("paid twice".to_owned())
            })
            .await
            .unwrap();
        assert_eq!(again, "a draft");
    }
    let cached = b.cached_worker("c");
    for _ in 0..2 {
        // The first reads the store and fills the cache, the second replays from the cache.
        let again: String = cached
            .call(call(), || async {
                Ok::<_, TestError>("paid twice".to_owned())
            })
            .await
            .unwrap();
        assert_eq!(again, "a draft");
    }

    let log = idem.attempts(&key).await.unwrap();
    let logged: Vec<Option<Vec<(String, f64)>>> = log
        .iter()
        .map(|a| a.cost.as_ref().map(|c| c.0.clone().into_iter().collect()))
        .collect();
    assert_eq!(
        logged,
        vec![
            Some(vec![("tokens".to_owned(), 30.0)]),
            Some(vec![("tokens".to_owned(), 100.0), ("usd".to_owned(), 0.25)]),
        ]
    );

    cached.flush_costs().await.unwrap();
    let ledger = idem.costs(Some(&op)).await.unwrap();
    let lines: Vec<(String, f64, f64, u64)> = ledger
        .iter()
        .map(|l| (l.unit.clone(), l.spent, l.avoided, l.replays))
        .collect();
    assert_eq!(
        lines,
        vec![
            ("tokens".to_owned(), 130.0, 400.0, 4),
            ("usd".to_owned(), 0.25, 1.0, 4),
        ]
    );
    assert!(ledger.iter().all(|l| l.op == op));
    // Another operation's ledger is its own.
    assert!(idem.costs(Some("no-such-op")).await.unwrap().is_empty());
}

/// A call that reports no cost leaves no trace in the ledger, and a claim that replaces an
/// attempt starts the new one with no cost of its own.
pub async fn calls_without_cost_leave_the_ledger_alone(b: &Backend) {
    let idem = b.worker("w");
    let op = unique_op("free");
    let call = || Call::new(op.clone()).key(&1_u8);
    let _: Result<u8, TestError> = idem
        .call(call(), || async {
            current().unwrap().add_cost("tokens", 5.0);
            Err(TestError::Body("no".into()))
        })
        .await;
    let v: u8 = idem
        .call(call(), || async { Ok::<_, TestError>(7) })
        .await
        .unwrap();
    let _: u8 = idem
        .call(call(), || async { Ok::<_, TestError>(8) })
        .await
        .unwrap();
    assert_eq!(v, 7);
    let record = idem.record(&call().key_value()).await.unwrap().unwrap();
    assert_eq!(record.cost, None, "the second attempt reported nothing");
    let ledger = idem.costs(Some(&op)).await.unwrap();
    let lines: Vec<(String, f64, f64, u64)> = ledger
        .iter()
        .map(|l| (l.unit.clone(), l.spent, l.avoided, l.replays))
        .collect();
    assert_eq!(lines, vec![("tokens".to_owned(), 5.0, 0.0, 0)]);
}
