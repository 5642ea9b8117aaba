//! The final state of a run, read two ways: the application table through SQL (which
//! executions left rows for which key) and the idem records through the store's API (`get` for
//! each key's snapshot, `list` for the operation's records). Exactly-once means: each key has
//! one completed record, and its rows are exactly the rows of the execution its snapshot names.

use std::collections::HashMap;

use idem_runtime::record::Status;
use idem_runtime::store::ListFilter;
use idem_runtime::{Error, Store};

use super::{App, Run, Snap};

/// What the check found.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub(crate) struct Findings {
    /// Keys with rows from more than one execution (or more rows than their snapshot says).
    pub(crate) duplicates: u64,
    /// Keys with a completed snapshot whose execution's rows are missing (all or some).
    pub(crate) lost: u64,
    /// Rows that no completed snapshot accounts for: of a key without a completed record, of
    /// an execution other than the snapshot's, or of a key outside the key space.
    pub(crate) orphans: u64,
    /// Keys of the key space without a completed record.
    pub(crate) unfinished: u64,
    /// The operation's records, as `list` returns them.
    pub(crate) records: u64,
    /// Of those, completed.
    pub(crate) completed: u64,
    /// Rows in the application table.
    pub(crate) rows: u64,
}

impl Findings {
    /// Whether exactly-once held for every key.
    pub(crate) fn clean(&self, keys: u64) -> bool {
        self.duplicates == 0
            && self.lost == 0
            && self.orphans == 0
            && self.unfinished == 0
            && self.records == keys
            && self.completed == keys
    }
}

/// One execution's rows of one key: (execution, rows, distinct sequence numbers).
type Execution = (String, i64, i64);

/// The table's rows, grouped by key and execution.
async fn executions(app: &App, run: &Run) -> Result<HashMap<String, Vec<Execution>>, Error> {
    let sql = format!(
        "SELECT key, exec, COUNT(*), COUNT(DISTINCT seq) FROM {} GROUP BY key, exec",
        run.table
    );
    let rows: Vec<(String, String, i64, i64)> = match app {
        App::Sqlite(pool) => sqlx::query_as(&sql).fetch_all(pool).await?,
        #[cfg(feature = "postgres")]
        App::Postgres(pool) => sqlx::query_as(&sql).fetch_all(pool).await?,
    };
    let mut by_key: HashMap<String, Vec<Execution>> = HashMap::new();
    for (key, exec, count, distinct) in rows {
        by_key.entry(key).or_default().push((exec, count, distinct));
    }
    Ok(by_key)
}

/// Checks keys `0..keys` of `run`.
pub(crate) async fn check(
    store: &dyn Store,
    app: &App,
    run: &Run,
    keys: u64,
) -> Result<Findings, Error> {
    let mut found = Findings::default();
    let mut by_key = executions(app, run).await?;
    found.rows = by_key
        .values()
        .flatten()
        .map(|(_, count, _)| *count as u64)
        .sum();
    for i in 0..keys {
        let key = Run::key(i);
        let record = store.get(&run.call(&key).key_value()).await?;
        let snap = match record {
            Some(r) if r.status == Status::Completed => {
                match r.snapshot.as_deref().map(serde_json::from_slice::<Snap>) {
                    Some(Ok(snap)) => Some(snap),
                    // A completed record without a readable snapshot accounts for no rows.
                    _ => None,
                }
            }
            _ => None,
        };
        let execs = by_key.remove(&key).unwrap_or_default();
        let Some(snap) = snap else {
            found.unfinished += 1;
            found.orphans += execs.iter().map(|(_, n, _)| *n as u64).sum::<u64>();
            continue;
        };
        let mut duplicate = execs.len() > 1;
        match execs.iter().find(|(exec, _, _)| *exec == snap.exec) {
            None => found.lost += 1,
            Some((_, count, distinct)) => {
                let want = i64::from(snap.rows);
                if *distinct < want {
                    found.lost += 1;
                }
                if *count > want || count != distinct {
                    duplicate = true;
                }
            }
        }
        if duplicate {
            found.duplicates += 1;
        }
        found.orphans += execs
            .iter()
            .filter(|(exec, _, _)| *exec != snap.exec)
            .map(|(_, n, _)| *n as u64)
            .sum::<u64>();
    }
    // Rows of keys outside the key space.
    found.orphans += by_key
        .values()
        .flatten()
        .map(|(_, n, _)| *n as u64)
        .sum::<u64>();
    let listed = store
        .list(&ListFilter {
            op: Some(run.op.clone()),
            limit: Some(
                u32::try_from(keys)
                    .unwrap_or(u32::MAX)
                    .saturating_add(1_000),
            ),
            ..ListFilter::default()
        })
        .await?;
    found.records = listed.len() as u64;
    found.completed = listed
        .iter()
        .filter(|r| r.status == Status::Completed)
        .count() as u64;
    Ok(found)
}
