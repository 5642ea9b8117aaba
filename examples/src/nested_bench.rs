//! `bench --mode nested`: what a step inside a step costs next to a top-level call, and what
//! reporting a cost adds, in alternating rounds on one store.
//!
//! Each round runs, in turn: `calls` top-level misses (fresh keys); one parent call whose body
//! makes `calls` argument-keyed steps; one parent whose body makes `calls` steps keyed by
//! position (`key = parent`); `calls` top-level misses whose bodies report a cost. Each call is
//! timed alone (its latency, one at a time), so the figures compare per-call overheads.

use std::sync::Arc;
use std::time::Instant;

use idem_runtime::{Call, Error, Idem, Store};
use serde::Serialize;

/// One JSON line of `bench --mode nested`.
#[derive(Debug, Serialize)]
pub struct NestedReport {
    /// Calls per variant per round.
    pub calls: usize,
    /// Alternating rounds.
    pub rounds: usize,
    /// p50 of a top-level miss, microseconds.
    pub top_p50_us: f64,
    /// p50 of an argument-keyed step inside a parent's body.
    pub step_p50_us: f64,
    /// p50 of a position-keyed step (`key = parent`) inside a parent's body.
    pub position_step_p50_us: f64,
    /// p50 of a top-level miss whose body reports a cost (`add_cost`).
    pub costed_p50_us: f64,
    /// `step_p50_us / top_p50_us`.
    pub step_ratio: f64,
    /// `position_step_p50_us / top_p50_us`.
    pub position_step_ratio: f64,
    /// `costed_p50_us / top_p50_us`.
    pub costed_ratio: f64,
}

/// Runs the variants in `rounds` alternating rounds of `calls` each.
pub async fn run(
    store: Arc<dyn Store>,
    calls: usize,
    rounds: usize,
) -> Result<NestedReport, Error> {
    let idem = Idem::builder(store).cache_capacity(0).build();
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let (mut top, mut step, mut position, mut costed) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        let tag = format!("{run_id}-{round}");
        for i in 0..calls {
            top.push(timed(&idem, Call::new("bench.nested.top").key(&(&tag, i)), false).await?);
        }
        nested(&idem, &tag, calls, false, &mut step).await?;
        nested(&idem, &tag, calls, true, &mut position).await?;
        for i in 0..calls {
            costed.push(
                timed(
                    &idem,
                    Call::new("bench.nested.costed").key(&(&tag, i)),
                    true,
                )
                .await?,
            );
        }
    }
    let p50 = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let (top, step, position, costed) = (
        p50(&mut top),
        p50(&mut step),
        p50(&mut position),
        p50(&mut costed),
    );
    Ok(NestedReport {
        calls,
        rounds,
        top_p50_us: top,
        step_p50_us: step,
        position_step_p50_us: position,
        costed_p50_us: costed,
        step_ratio: step / top,
        position_step_ratio: position / top,
        costed_ratio: costed / top,
    })
}

/// One call with a trivial body, timed in microseconds.
async fn timed(idem: &Idem, call: Call, cost: bool) -> Result<f64, Error> {
    let started = Instant::now();
    let _: u64 = idem
        .call(call, || async move {
            if cost {
                if let Some(info) = idem_runtime::current() {
                    info.add_cost("tokens", 100.0);
                }
            }
            Ok::<_, Error>(1)
        })
        .await?;
    Ok(started.elapsed().as_secs_f64() * 1e6)
}

/// One parent whose body makes `calls` steps, each timed.
async fn nested(
    idem: &Idem,
    tag: &str,
    calls: usize,
    by_position: bool,
    out: &mut Vec<f64>,
) -> Result<(), Error> {
    let op = if by_position {
        "bench.nested.position"
    } else {
        "bench.nested.parent"
    };
    let timings: Vec<f64> = idem
        .call(Call::new(op).key(&tag), || async {
            let mut timings = Vec::with_capacity(calls);
            for i in 0..calls {
                let call = if by_position {
                    Call::new("bench.nested.position_step").by_position()
                } else {
                    Call::new("bench.nested.step").key(&(tag, i))
                };
                timings.push(timed(idem, call, false).await?);
            }
            Ok::<_, Error>(timings)
        })
        .await?;
    out.extend(timings);
    Ok(())
}
