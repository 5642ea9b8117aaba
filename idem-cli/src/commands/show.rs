//! `idem show KEY`: one record and its attempts log.

use idem_runtime::record::now_millis;
use idem_runtime::store::Store;

use crate::failure::Failure;
use crate::output::{age, attempt_json, attempts_table, iso, record_json, snapshot_preview};
use crate::stdout::say;
use crate::store::{find, is_stuck};

pub(crate) async fn run(store: &dyn Store, key: &str, json: bool) -> Result<(), Failure> {
    let record = find(store, key).await?;
    let attempts = store
        .attempts(&record.key)
        .await
        .map_err(|e| Failure::store(&e))?;
    let now = now_millis();
    if json {
        let mut value = record_json(&record);
        value["attempts"] = attempts.iter().map(attempt_json).collect();
        say!("{value}");
        return Ok(());
    }
    let opt = |v: Option<i64>| {
        v.map_or_else(
            || "-".to_owned(),
            |t| format!("{} ({})", iso(t), age(t, now)),
        )
    };
    say!("key:        {}", record.key);
    say!("op:         {}", record.op);
    say!(
        "status:     {}{}",
        record.status,
        if is_stuck(&record, now) {
            " (stuck: lease expired)"
        } else {
            ""
        }
    );
    say!("attempt:    {}", record.attempt);
    say!("worker:     {}", record.worker.as_deref().unwrap_or("-"));
    say!("created:    {}", opt(Some(record.created_at)));
    say!("updated:    {}", opt(Some(record.updated_at)));
    say!(
        "lease until:{}",
        format_args!(" {}", opt(record.lease_until))
    );
    say!("expires:    {}", opt(record.expires_at));
    say!(
        "snapshot:   {}",
        record.snapshot.as_ref().map_or_else(
            || "-".to_owned(),
            |s| snapshot_preview(s, record.snapshot_kind)
        )
    );
    if let Some(error) = &record.error {
        say!("error:      {error}");
    }
    say!();
    if attempts.is_empty() {
        say!("no attempts logged");
    } else {
        say!("{}", attempts_table(&attempts));
    }
    Ok(())
}
