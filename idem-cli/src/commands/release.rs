//! `idem release`: mark running attempts failed so their keys' next calls run again now.

use idem_runtime::record::{millis, now_millis, Record, Status};
use idem_runtime::store::{ListFilter, Store};
use serde_json::json;

use crate::failure::Failure;
use crate::stdout::say;
use crate::store::{find, is_stuck, SCAN_LIMIT};
use crate::ReleaseArgs;

pub(crate) async fn run(store: &dyn Store, args: &ReleaseArgs, json: bool) -> Result<(), Failure> {
    let now = now_millis();
    let targets: Vec<Record> = if let Some(key) = &args.key {
        let record = find(store, key).await?;
        if record.status != Status::Running {
            return Err(Failure::not_found(format!(
                "key {} is {}, not running: nothing to release",
                record.key, record.status
            )));
        }
        if !args.force && !is_stuck(&record, now) {
            let left = record.lease_until.unwrap_or(now) - now;
            return Err(Failure::lease_live(format!(
                "key {} is held by a live lease for {} more ms (worker {}); pass --force to release it anyway",
                record.key,
                left,
                record.worker.as_deref().unwrap_or("?")
            )));
        }
        vec![record]
    } else {
        let grace = args.older_than.map_or(0, millis);
        store
            .list(&ListFilter {
                op: args.op.clone(),
                status: Some(Status::Running),
                limit: Some(SCAN_LIMIT),
                ..ListFilter::default()
            })
            .await
            .map_err(|e| Failure::store(&e))?
            .into_iter()
            .filter(|r| r.lease_until.is_some_and(|l| l + grace < now))
            .collect()
    };
    let mut released = Vec::new();
    for record in &targets {
        if store
            .release(&record.key)
            .await
            .map_err(|e| Failure::store(&e))?
        {
            released.push(record);
        }
    }
    if json {
        let keys: Vec<_> = released
            .iter()
            .map(|r| json!({ "key": r.key.to_hex(), "op": r.op, "attempt": r.attempt }))
            .collect();
        say!("{}", json!({ "released": released.len(), "keys": keys }));
    } else if released.is_empty() {
        say!("released nothing (no running key with an expired lease)");
    } else {
        for r in &released {
            say!("released {} (op {}, attempt {})", r.key, r.op, r.attempt);
        }
        say!(
            "released {} key(s): their next call runs the body again",
            released.len()
        );
    }
    Ok(())
}
