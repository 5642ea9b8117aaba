//! Steps inside steps, on every store: a call made in another's body records its parent and
//! position, steps keyed by position replay on a re-run of their parent, and a changed pipeline
//! is a divergence, never the wrong snapshot.

use std::sync::atomic::{AtomicUsize, Ordering};

use idem_runtime::store::ParentLink;
use idem_runtime::{current, Call, Error, Idem};

use crate::backends::Backend;
use crate::conformance::TestError;
use crate::unique_op;

/// Runs `op` as a step of the running body, counting executions in `runs`.
async fn step(
    idem: &Idem,
    call: Call,
    runs: &AtomicUsize,
    value: &str,
) -> Result<String, TestError> {
    let value = value.to_owned();
    idem.call(call, || async move {
        runs.fetch_add(1, Ordering::SeqCst);
        Ok::<_, TestError>(value)
    })
    .await
}

/// Three steps of one parent: two keyed by their arguments, one by its position. Each knows
/// its parent and position (`current()`), and the store lists them in order.
pub async fn steps_record_their_parent_and_position(b: &Backend) {
    let idem = b.worker("w");
    let op = unique_op("pipeline");
    let parent = Call::new(op.clone()).key(&"run-1");
    let parent_key = parent.key_value();
    let seen: Vec<Option<(String, u32)>> = idem
        .call(parent, || async {
            let mut seen = Vec::new();
            for (i, call) in [
                Call::new(format!("{op}::draft")).key(&"a"),
                Call::new(format!("{op}::review")).by_position(),
                Call::new(format!("{op}::save")).key(&"c"),
            ]
            .into_iter()
            .enumerate()
            {
                let link = idem
                    .call(call, || async {
                        let link = current().and_then(|c| c.parent);
                        Ok::<_, TestError>(link.map(|l: ParentLink| (l.key.to_hex(), l.position)))
                    })
                    .await?;
                assert_eq!(link.as_ref().map(|l| l.1), Some(i as u32));
                seen.push(link);
            }
            Ok::<_, TestError>(seen)
        })
        .await
        .unwrap();
    assert!(seen
        .iter()
        .all(|l| l.as_ref().is_some_and(|l| l.0 == parent_key.to_hex())));

    let children = idem.store().children(&parent_key).await.unwrap();
    let listed: Vec<(String, Option<u32>)> = children
        .iter()
        .map(|r| (r.op.clone(), r.parent.map(|p| p.position)))
        .collect();
    assert_eq!(
        listed,
        vec![
            (format!("{op}::draft"), Some(0)),
            (format!("{op}::review"), Some(1)),
            (format!("{op}::save"), Some(2)),
        ]
    );
    assert!(
        children.iter().all(|r| r.snapshot.is_none()),
        "listings carry no snapshot"
    );
    // The parent itself has no parent, and nothing was made by a step.
    let top = idem.record(&parent_key).await.unwrap().unwrap();
    assert_eq!(top.parent, None);
    assert!(idem
        .store()
        .children(&children[0].key)
        .await
        .unwrap()
        .is_empty());
}

/// A parent that fails after two of its steps runs again: the finished steps replay from their
/// records (keyed by position), and only the rest run.
pub async fn rerun_replays_finished_steps_by_position(b: &Backend) {
    for idem in [b.worker("w"), b.cached_worker("w")] {
        let op = unique_op("resume");
        let runs: [AtomicUsize; 3] = Default::default();
        let fail_after = AtomicUsize::new(2);
        let run = || {
            idem.call(Call::new(op.clone()).key(&"run"), || async {
                let mut out = Vec::new();
                for (i, runs) in runs.iter().enumerate() {
                    if fail_after.load(Ordering::SeqCst) == i {
                        return Err(TestError::Body("crashed mid-pipeline".into()));
                    }
                    let call = Call::new(format!("{op}::step{i}")).by_position();
                    out.push(step(&idem, call, runs, &format!("out{i}")).await?);
                }
                Ok::<_, TestError>(out)
            })
        };
        assert!(run().await.is_err());
        fail_after.store(usize::MAX, Ordering::SeqCst);
        let out = run().await.unwrap();
        assert_eq!(out, vec!["out0", "out1", "out2"]);
        let counts: Vec<usize> = runs.iter().map(|r| r.load(Ordering::SeqCst)).collect();
        assert_eq!(counts, vec![1, 1, 1], "each step ran once across both runs");
    }
}

/// A re-run whose step at a position is now another operation gets `Diverged` naming what was
/// recorded there, and the new step does not run; so does one with other `verify` inputs.
pub async fn changed_pipeline_is_a_divergence(b: &Backend) {
    let idem = b.worker("w");
    let op = unique_op("diverge");
    let runs = AtomicUsize::new(0);
    let second = std::sync::Mutex::new(format!("{op}::review"));
    let input = std::sync::Mutex::new("v1".to_owned());
    let run = || {
        idem.call(Call::new(op.clone()).key(&"run"), || async {
            let first = Call::new(format!("{op}::draft"))
                .by_position()
                .verify(&*input.lock().unwrap().clone());
            step(&idem, first, &runs, "draft").await?;
            let name = second.lock().unwrap().clone();
            step(&idem, Call::new(name).by_position(), &runs, "next").await?;
            Err::<String, _>(TestError::Body("not done yet".into()))
        })
    };
    assert!(matches!(run().await, Err(TestError::Body(_))));
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    *second.lock().unwrap() = format!("{op}::translate");
    match run().await {
        Err(TestError::Idem(Error::Diverged {
            op: now,
            position,
            recorded,
            ..
        })) => {
            assert_eq!(now, format!("{op}::translate"));
            assert_eq!(position, 1);
            assert!(recorded.contains(&format!("{op}::review")), "{recorded}");
        }
        other => panic!("expected Diverged, got {other:?}"),
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "the changed step did not run"
    );

    *second.lock().unwrap() = format!("{op}::review");
    *input.lock().unwrap() = "v2".to_owned();
    match run().await {
        Err(TestError::Idem(Error::Diverged {
            position, recorded, ..
        })) => {
            assert_eq!(position, 0);
            assert!(recorded.contains("different `verify` inputs"), "{recorded}");
        }
        other => panic!("expected Diverged, got {other:?}"),
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// A call keyed by position outside any body has nothing to be keyed by: `NoParent`, and the
/// body does not run.
pub async fn position_key_outside_a_body_is_an_error(b: &Backend) {
    let idem = b.worker("w");
    let runs = AtomicUsize::new(0);
    let call = Call::new(unique_op("orphan")).by_position();
    match step(&idem, call, &runs, "x").await {
        Err(TestError::Idem(Error::NoParent { .. })) => {}
        other => panic!("expected NoParent, got {other:?}"),
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}
