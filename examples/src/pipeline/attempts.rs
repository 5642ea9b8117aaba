//! Reading the idem store's attempts log back after a run: the keys that needed more than one
//! attempt, or whose attempt did not finish, are the interesting ones.

use anyhow::Result;
use idem_runtime::record::AttemptOutcome;
use idem_runtime::store::ListFilter;

/// One attempt of an interesting key.
#[derive(Debug, Clone)]
pub(crate) struct AttemptRow {
    /// The step (its op, without the `ai_pipeline::` prefix).
    pub(crate) op: String,
    /// The key, shortened.
    pub(crate) key: String,
    /// The attempt number (the fencing token).
    pub(crate) attempt: u64,
    /// The worker that made it.
    pub(crate) worker: String,
    /// How it ended.
    pub(crate) outcome: AttemptOutcome,
    /// How long it took, if it ended.
    pub(crate) duration: Option<i64>,
    /// Its error, if any.
    pub(crate) error: String,
}

/// What the attempts log says about this run's keys.
#[derive(Debug, Clone, Default)]
pub(crate) struct AttemptsLog {
    /// Attempts of the interesting keys, by op, key and attempt.
    pub(crate) rows: Vec<AttemptRow>,
    /// Attempts of all keys.
    pub(crate) attempts_total: usize,
    /// Keys of this run.
    pub(crate) keys_total: usize,
}

/// Reads the attempts of the pipeline's keys created at or after `since` (ms).
pub(crate) async fn read(url: &str, since: i64) -> Result<AttemptsLog> {
    let store = idem_runtime::store::open(url).await?;
    let records = store
        .list(&ListFilter {
            limit: Some(100_000),
            ..ListFilter::default()
        })
        .await?;
    let mut log = AttemptsLog::default();
    for record in records
        .iter()
        .filter(|r| r.op.starts_with("ai_pipeline::") && r.created_at >= since)
    {
        let attempts = store.attempts(&record.key).await?;
        log.keys_total += 1;
        log.attempts_total += attempts.len();
        let interesting = attempts.len() > 1
            || attempts
                .iter()
                .any(|a| a.outcome != AttemptOutcome::Completed);
        if !interesting {
            continue;
        }
        for a in attempts {
            log.rows.push(AttemptRow {
                op: record.op.trim_start_matches("ai_pipeline::").to_owned(),
                key: record.key.short().to_string(),
                attempt: a.attempt,
                worker: a.worker,
                outcome: a.outcome,
                duration: a.ended_at.map(|e| e - a.started_at),
                error: a.error.unwrap_or_default(),
            });
        }
    }
    log.rows
        .sort_by(|a, b| (&a.op, &a.key, a.attempt).cmp(&(&b.op, &b.key, b.attempt)));
    Ok(log)
}
