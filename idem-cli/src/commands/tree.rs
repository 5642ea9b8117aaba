//! `idem show KEY --tree`: the run a key started, as a tree of its steps (the calls made inside
//! its body, and theirs), each with its outcome, duration and attempts.

use idem_runtime::record::{now_millis, AttemptLog, Millis, Record, Status};
use idem_runtime::store::Store;
use serde_json::{json, Value};

use crate::failure::Failure;
use crate::output::{iso, record_json};
use crate::stdout::say;
use crate::store::{find, is_stuck};

/// The deepest nesting shown: deeper steps are counted, not listed (a guard against a
/// corrupt store whose links loop).
const MAX_DEPTH: usize = 32;
/// The most steps shown in one tree.
const MAX_STEPS: usize = 10_000;

/// One step of the tree, with what the store says about it.
struct Node {
    record: Record,
    attempts: Vec<AttemptLog>,
    steps: Vec<Node>,
}

pub(crate) async fn run(store: &dyn Store, key: &str, json: bool) -> Result<(), Failure> {
    let root = find(store, key).await?;
    let mut budget = MAX_STEPS;
    let tree = load(store, root, 0, &mut budget).await?;
    let now = now_millis();
    if json {
        say!("{}", node_json(&tree, now));
    } else {
        say!("{}", line(&tree, now));
        print_steps(&tree.steps, "", now)?;
        if budget == 0 {
            say!("(stopped after {MAX_STEPS} steps)");
        }
    }
    Ok(())
}

/// Reads a record's attempts and, depth first, its steps.
async fn load(
    store: &dyn Store,
    record: Record,
    depth: usize,
    budget: &mut usize,
) -> Result<Node, Failure> {
    let attempts = store
        .attempts(&record.key)
        .await
        .map_err(|e| Failure::store(&e))?;
    let mut steps = Vec::new();
    if depth < MAX_DEPTH && *budget > 0 {
        let children = store
            .children(&record.key)
            .await
            .map_err(|e| Failure::store(&e))?;
        for child in children {
            if *budget == 0 {
                break;
            }
            *budget -= 1;
            steps.push(Box::pin(load(store, child, depth + 1, budget)).await?);
        }
    }
    Ok(Node {
        record,
        attempts,
        steps,
    })
}

fn print_steps(steps: &[Node], indent: &str, now: Millis) -> Result<(), Failure> {
    for (i, step) in steps.iter().enumerate() {
        let last = i + 1 == steps.len();
        let (branch, more) = if last {
            ("└─ ", "   ")
        } else {
            ("├─ ", "│  ")
        };
        say!("{indent}{branch}{}", line(step, now));
        print_steps(&step.steps, &format!("{indent}{more}"), now)?;
    }
    Ok(())
}

/// `#1 pipeline::review  completed  1.2s  2 attempts  3f2a9c01d4e5`.
fn line(node: &Node, now: Millis) -> String {
    let r = &node.record;
    let position = r
        .parent
        .map_or_else(String::new, |p| format!("#{} ", p.position));
    let status = if is_stuck(r, now) {
        "stuck".to_owned()
    } else {
        r.status.to_string()
    };
    let attempts = match node.attempts.len() {
        1 => "1 attempt".to_owned(),
        n => format!("{n} attempts"),
    };
    let duration = duration_ms(node, now).map_or_else(|| "-".to_owned(), duration_text);
    let error = r
        .error
        .as_deref()
        .filter(|_| r.status == Status::Failed)
        .map_or_else(String::new, |e| format!("  ({e})"));
    format!(
        "{position}{}  {status}  {duration}  {attempts}  {}{error}",
        r.op,
        r.key.short()
    )
}

/// How long the latest attempt ran (until now, while it runs).
fn duration_ms(node: &Node, now: Millis) -> Option<u64> {
    let last = node.attempts.last()?;
    let end = last.ended_at.unwrap_or(now);
    u64::try_from(end - last.started_at).ok()
}

fn duration_text(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => format!("{}m{}s", ms / 60_000, ms % 60_000 / 1000),
    }
}

fn node_json(node: &Node, now: Millis) -> Value {
    let mut value = record_json(&node.record);
    value["attempts"] = json!(node.attempts.len());
    value["duration_ms"] = json!(duration_ms(node, now));
    value["started_at"] = json!(node.attempts.last().map(|a| iso(a.started_at)));
    value["steps"] = node.steps.iter().map(|s| node_json(s, now)).collect();
    value
}
