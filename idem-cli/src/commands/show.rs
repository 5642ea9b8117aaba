//! `idem show KEY`: one record, its streamed chunks (count and a preview), and its attempts log.

use idem_runtime::record::{now_millis, Record};
use idem_runtime::store::Store;

use crate::failure::Failure;
use crate::output::{age, attempt_json, attempts_table, clip, iso, record_json, snapshot_preview};
use crate::stdout::say;
use crate::store::{find, is_stuck};

pub(crate) async fn run(store: &dyn Store, key: &str, json: bool) -> Result<(), Failure> {
    let record = find(store, key).await?;
    let attempts = store
        .attempts(&record.key)
        .await
        .map_err(|e| Failure::store(&e))?;
    let stream = stream_of(store, &record).await?;
    let now = now_millis();
    if json {
        let mut value = record_json(&record);
        value["stream"] = stream.as_ref().map_or(
            serde_json::Value::Null,
            |s| serde_json::json!({ "chunks": s.chunks, "preview": s.preview }),
        );
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
    if let Some(stream) = &stream {
        say!(
            "stream:     {} chunks: {}",
            stream.chunks,
            chunks_preview(&stream.preview)
        );
    }
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

/// How many chunks the record's attempt streamed, and its first few (decoded as JSON).
struct StreamShown {
    chunks: u64,
    preview: Vec<serde_json::Value>,
}

/// How many chunks a preview shows.
const PREVIEW_CHUNKS: u32 = 8;

async fn stream_of(store: &dyn Store, record: &Record) -> Result<Option<StreamShown>, Failure> {
    let chunks = store
        .count_chunks(&record.key, record.attempt)
        .await
        .map_err(|e| Failure::store(&e))?;
    if chunks == 0 {
        return Ok(None);
    }
    let first = store
        .read_chunks(&record.key, record.attempt, 0, PREVIEW_CHUNKS)
        .await
        .map_err(|e| Failure::store(&e))?;
    let preview = first
        .iter()
        .map(|c| {
            serde_json::from_slice(&c.bytes).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&c.bytes).into_owned())
            })
        })
        .collect();
    Ok(Some(StreamShown { chunks, preview }))
}

/// Text chunks (an LLM's tokens) read as the text they make; other chunks as JSON.
fn chunks_preview(preview: &[serde_json::Value]) -> String {
    let text: String = if preview.iter().all(serde_json::Value::is_string) {
        preview
            .iter()
            .filter_map(serde_json::Value::as_str)
            .collect()
    } else {
        preview
            .iter()
            .map(serde_json::Value::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("{}...", clip(&text, 100))
}
