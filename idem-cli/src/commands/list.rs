//! `idem list`: records, newest first, filtered by operation, status, age or stuckness.

use idem_runtime::record::{millis, now_millis, Status};
use idem_runtime::store::{ListFilter, Store};

use crate::failure::Failure;
use crate::output::{record_json, records_table};
use crate::stdout::say;
use crate::store::{is_stuck, SCAN_LIMIT};
use crate::ListArgs;

pub(crate) async fn run(store: &dyn Store, args: &ListArgs, json: bool) -> Result<(), Failure> {
    let now = now_millis();
    let filter = ListFilter {
        op: args.op.clone(),
        status: if args.stuck {
            Some(Status::Running)
        } else {
            args.status.map(Status::from)
        },
        updated_before: args.older_than.map(|d| now - millis(d)),
        limit: Some(if args.newer_than.is_some() || args.stuck {
            SCAN_LIMIT
        } else {
            args.limit
        }),
    };
    let mut records = store.list(&filter).await.map_err(|e| Failure::store(&e))?;
    if let Some(d) = args.newer_than {
        records.retain(|r| r.updated_at >= now - millis(d));
    }
    if args.stuck {
        records.retain(|r| is_stuck(r, now));
    }
    records.truncate(usize::try_from(args.limit).unwrap_or(usize::MAX));
    if json {
        // Listings never read snapshots (they may be megabytes each): `show` has their size.
        let rows: Vec<_> = records
            .iter()
            .map(|r| {
                let mut row = record_json(r);
                if let Some(fields) = row.as_object_mut() {
                    fields.remove("snapshot_bytes");
                }
                row
            })
            .collect();
        say!("{}", serde_json::Value::Array(rows));
    } else if records.is_empty() {
        say!("no records");
    } else {
        say!("{}", records_table(&records, now));
    }
    Ok(())
}
