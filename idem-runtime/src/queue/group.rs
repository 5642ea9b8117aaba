//! Group commit ([`Consumer::group_commit`]): messages that are waiting together run in one
//! transaction, one after another, and commit once; a group that fails runs each message
//! alone, as without grouping.
//!
//! A message's effect is as exactly-once as alone: its claim, its handler's writes and its
//! outcome still commit together (with the other messages' ones), so a consumer killed at any
//! instant leaves every message of the group whole or none of it, and a message is acked only
//! after the commit. What grouping saves is the transaction per message: its `BEGIN`, its
//! `COMMIT` and, above all, its WAL flush (PostgreSQL) or fsync (SQLite).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::future::{join_all, BoxFuture};
use serde::de::DeserializeOwned;

use super::consumer::{Consumer, Stats};
use super::delivery::Delivery;
use super::process::{call_for, conclude, prepare, Ran, Runner};
use crate::call::Call;

/// Runs the calls of a group in one transaction. `Ok`: every call executed or replayed and
/// the transaction committed, in the calls' order. `Err`: why one of them did not (its handler
/// failed, its key is held elsewhere, the database refused); the transaction rolled back and
/// nothing of the group was written.
pub(crate) type GroupRunner<T> =
    Arc<dyn Fn(Vec<(Call, T)>) -> BoxFuture<'static, Result<Vec<Ran>, String>> + Send + Sync>;

/// Handles deliveries that arrived together: as one group when more than one of them can run,
/// else each alone.
pub(crate) async fn process_group<T: DeserializeOwned>(
    consumer: &Consumer,
    source: &str,
    deliveries: Vec<Box<dyn Delivery>>,
    runner: &Runner<T>,
    group: &GroupRunner<T>,
) {
    let mut prepared = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        // Bad messages are dead-lettered here and never join the group.
        if let Some(p) = prepare::<T>(consumer, source, delivery).await {
            prepared.push(p);
        }
    }
    let mut keyed = Vec::with_capacity(prepared.len());
    let mut calls = Vec::with_capacity(prepared.len());
    for p in prepared {
        calls.push((call_for(consumer, &p.key), p.value));
        keyed.push((p.delivery, p.key));
    }
    if calls.len() > 1 {
        let size = calls.len() as u64;
        let why = match group(calls).await {
            Ok(rans) => {
                consumer.stats.grouped.fetch_add(size, Ordering::Relaxed);
                join_all(
                    keyed
                        .iter()
                        .zip(rans)
                        .map(|((delivery, _), ran)| conclude(consumer, &**delivery, ran)),
                )
                .await;
                return;
            }
            Err(why) => why,
        };
        Stats::bump(&consumer.stats.group_fallbacks);
        tracing::debug!(
            size,
            why,
            "idem: a group of messages rolled back; running each alone"
        );
        // Each alone, at once: the values went into the group, so decode them again (they
        // decoded a moment ago).
        join_all(keyed.iter().map(|(delivery, key)| async move {
            match serde_json::from_slice::<T>(delivery.payload()) {
                Ok(value) => {
                    let ran = runner(call_for(consumer, key), value).await;
                    conclude(consumer, &**delivery, ran).await;
                }
                Err(e) => {
                    let error = format!("its payload no longer decodes: {e}");
                    conclude(consumer, &**delivery, Ran::NotRecorded(error)).await;
                }
            }
        }))
        .await;
        return;
    }
    for ((delivery, _), (call, value)) in keyed.into_iter().zip(calls) {
        let ran = runner(call, value).await;
        conclude(consumer, &*delivery, ran).await;
    }
}
