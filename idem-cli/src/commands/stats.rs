//! `idem stats`: records counted by operation and status, the re-execution ratio, the cost
//! ledger (spent vs avoided, by operation and unit), and with `--metrics` the replay ratio from
//! a process's Prometheus counters.

use std::collections::BTreeMap;

use idem_runtime::store::{CostLine, OpCounts, Store};
use serde_json::json;

use crate::failure::Failure;
use crate::output::{costs_table, stats_table};
use crate::scrape;
use crate::stdout::say;
use crate::StatsArgs;

/// Per-operation counts.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub(crate) struct OpStats {
    pub(crate) records: u64,
    pub(crate) running: u64,
    pub(crate) stuck: u64,
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    /// Executions of the body: the sum of the records' attempt numbers.
    pub(crate) attempts: u64,
}

impl OpStats {
    fn from_counts(c: &OpCounts) -> Self {
        Self {
            records: c.records,
            running: c.running,
            stuck: c.stuck,
            completed: c.completed,
            failed: c.failed,
            attempts: c.attempts,
        }
    }

    fn add(&mut self, other: &OpStats) {
        self.records += other.records;
        self.running += other.running;
        self.stuck += other.stuck;
        self.completed += other.completed;
        self.failed += other.failed;
        self.attempts += other.attempts;
    }

    /// Share of executions that re-ran a key already attempted (retries after failures,
    /// takeovers of crashed workers): `(attempts - records) / attempts`.
    pub(crate) fn reexecution_ratio(&self) -> Option<f64> {
        (self.attempts > 0)
            .then(|| (self.attempts.saturating_sub(self.records)) as f64 / self.attempts as f64)
    }
}

pub(crate) async fn run(store: &dyn Store, args: &StatsArgs, json: bool) -> Result<(), Failure> {
    // Counted by the store (in SQL for SQLite and PostgreSQL): no record, let alone a
    // snapshot, is read.
    let counts = store
        .counts(args.op.as_deref())
        .await
        .map_err(|e| Failure::store(&e))?;
    let mut total = OpStats::default();
    let mut by_op: BTreeMap<String, OpStats> = BTreeMap::new();
    for c in &counts {
        let s = OpStats::from_counts(c);
        total.add(&s);
        by_op.insert(c.op.clone(), s);
    }
    let counters = match &args.metrics {
        Some(url) => Some(scrape::counters(url).await.map_err(|e| Failure {
            code: 1,
            kind: "metrics",
            message: format!("cannot read metrics from `{url}`: {e}"),
        })?),
        None => None,
    };
    let replay_ratio = counters.as_ref().and_then(scrape::Counters::replay_ratio);
    let costs = store
        .costs(args.op.as_deref())
        .await
        .map_err(|e| Failure::store(&e))?;
    if json {
        let ops: serde_json::Map<_, _> = by_op
            .iter()
            .map(|(op, s)| {
                let mut v = json!(s);
                v["reexecution_ratio"] = json!(s.reexecution_ratio());
                let units: serde_json::Map<_, _> = costs
                    .iter()
                    .filter(|c| &c.op == op)
                    .map(|c| (c.unit.clone(), cost_json(c)))
                    .collect();
                v["costs"] = serde_json::Value::Object(units);
                (op.clone(), v)
            })
            .collect();
        let mut value = json!(total);
        value["reexecution_ratio"] = json!(total.reexecution_ratio());
        value["by_op"] = serde_json::Value::Object(ops);
        value["replay_ratio"] = json!(replay_ratio);
        value["costs"] = costs
            .iter()
            .map(|c| {
                let mut v = cost_json(c);
                v["op"] = json!(c.op);
                v["unit"] = json!(c.unit);
                v
            })
            .collect();
        if let Some(c) = &counters {
            value["metrics"] = json!({ "executions": c.executions, "replays": c.replays });
        }
        say!("{value}");
        return Ok(());
    }
    say!("{}", stats_table(&by_op, &total));
    if !costs.is_empty() {
        say!("{}", costs_table(&costs));
    }
    let pct = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), |r| format!("{:.1}%", r * 100.0));
    say!(
        "re-execution ratio: {} (executions that re-ran an already-attempted key)",
        pct(total.reexecution_ratio())
    );
    match &counters {
        Some(c) => say!(
            "replay ratio:       {} ({} replays, {} executions, from {})",
            pct(replay_ratio),
            c.replays,
            c.executions,
            args.metrics.as_deref().unwrap_or_default()
        ),
        None => say!("replay ratio:       - (the store does not log replays; pass --metrics URL of a process's Prometheus endpoint)"),
    }
    Ok(())
}

/// One cost line's figures: spent, avoided, replays, and the share avoided.
fn cost_json(c: &CostLine) -> serde_json::Value {
    json!({
        "spent": c.spent,
        "avoided": c.avoided,
        "replays": c.replays,
        "avoided_share": avoided_share(c),
    })
}

/// What replays avoided, as a share of what the work would have cost without them.
pub(crate) fn avoided_share(c: &CostLine) -> Option<f64> {
    let total = c.spent + c.avoided;
    (total > 0.0).then(|| c.avoided / total)
}
