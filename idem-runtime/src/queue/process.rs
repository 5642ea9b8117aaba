//! One message through a consumer: its key, its payload, the idempotent call, then ack, retry
//! or dead letter, in that order of certainty: nothing is acked before its outcome is recorded
//! (or its dead letter confirmed).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;

use super::consumer::{Consumer, Stats};
use super::delivery::{DeadLetter, Delivery};
use super::recording;
use crate::call::Call;
use crate::call_error::CallError;
use crate::error::Error;
use crate::idem::Idem;

/// How a message's call ended.
pub(crate) enum Ran {
    /// The handler ran and its outcome is recorded.
    Executed,
    /// A recorded outcome was replayed; the handler did not run.
    Replayed,
    /// The handler returned an error (its text); nothing is recorded.
    Failed(String),
    /// idem could not claim or record (store down, still in progress, result not kept).
    NotRecorded(String),
}

/// Runs one message's call: the key and options are in `Call`, the decoded payload is `T`.
pub(crate) type Runner<T> = Arc<dyn Fn(Call, T) -> BoxFuture<'static, Ran> + Send + Sync>;

/// A runner that calls `handler` through [`Idem::try_call`].
pub(crate) fn call_runner<T, R, E, F, Fut>(idem: Idem, handler: F) -> Runner<T>
where
    T: Send + 'static,
    R: serde::Serialize + DeserializeOwned + Send + 'static,
    E: std::fmt::Display + Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
{
    let handler = Arc::new(handler);
    Arc::new(move |call: Call, value: T| {
        let idem = idem.clone();
        let handler = Arc::clone(&handler);
        Box::pin(async move {
            let ran = AtomicBool::new(false);
            let body = || {
                ran.store(true, Ordering::Relaxed);
                handler(value)
            };
            let (result, unrecorded) = recording::watch(idem.try_call(call, body)).await;
            settle(result, unrecorded, ran.load(Ordering::Relaxed))
        })
    })
}

/// What a call's result means for its message.
pub(crate) fn settle<R, E: std::fmt::Display>(
    result: Result<R, CallError<E>>,
    unrecorded: Option<recording::Unrecorded>,
    ran: bool,
) -> Ran {
    match result {
        Ok(_) if unrecorded == Some(recording::Unrecorded::Result) => Ran::Failed(
            "the handler's result cannot be recorded (over the snapshot limit, or not \
             encodable as JSON and back)"
                .into(),
        ),
        Ok(_) if unrecorded.is_some() => {
            Ran::NotRecorded("the store could not record the outcome".into())
        }
        Ok(_) if ran => Ran::Executed,
        Ok(_) => Ran::Replayed,
        Err(CallError::Body(e)) => Ran::Failed(e.to_string()),
        Err(CallError::Idem(e)) => Ran::NotRecorded(e.to_string()),
    }
}

/// Handles one delivery to the end: key, decode, call, then ack, retry or dead letter.
pub(crate) async fn process<T: DeserializeOwned>(
    consumer: &Consumer,
    source: &str,
    delivery: Box<dyn Delivery>,
    runner: &Runner<T>,
) {
    if let Some(prepared) = prepare(consumer, source, delivery).await {
        let ran = runner(call_for(consumer, &prepared.key), prepared.value).await;
        conclude(consumer, &*prepared.delivery, ran).await;
    }
}

/// A delivery with its key and decoded payload, ready to run.
pub(crate) struct Prepared<T> {
    pub(crate) delivery: Box<dyn Delivery>,
    pub(crate) key: String,
    pub(crate) value: T,
}

/// Counts a delivery and finds its key and value; a message that has neither is dead-lettered
/// here (it can never succeed) and `None` returned.
pub(crate) async fn prepare<T: DeserializeOwned>(
    consumer: &Consumer,
    source: &str,
    delivery: Box<dyn Delivery>,
) -> Option<Prepared<T>> {
    Stats::bump(&consumer.stats.received);
    let bad = |reason: String| Error::BadMessage {
        op: consumer.op.to_string(),
        source_name: source.to_owned(),
        message: delivery
            .id()
            .map_or_else(|| delivery.describe(), str::to_owned),
        reason,
    };
    let key = match delivery.id().map(str::to_owned).or_else(|| {
        consumer
            .key_fn
            .as_ref()
            .and_then(|key_fn| key_fn(delivery.payload()))
    }) {
        Some(key) => key,
        None => {
            let reason = match consumer.key_fn {
                Some(_) => "it has no message id and the key function found no key",
                None => "it has no message id and the consumer has no key function",
            };
            reject(consumer, &*delivery, bad(reason.into())).await;
            return None;
        }
    };
    match serde_json::from_slice(delivery.payload()) {
        Ok(value) => Some(Prepared {
            delivery,
            key,
            value,
        }),
        Err(e) => {
            let error = bad(format!("its payload does not decode: {e}"));
            reject(consumer, &*delivery, error).await;
            None
        }
    }
}

/// The idempotent call of a message keyed `key`, with the consumer's options.
pub(crate) fn call_for(consumer: &Consumer, key: &str) -> Call {
    let mut call = Call::new(consumer.op.clone()).key(key);
    call.options.ttl = consumer.ttl;
    call.options.lease = consumer.lease;
    call.options.wait = consumer.wait;
    call
}

/// Acks, retries or dead-letters a delivery by how its call ran.
pub(crate) async fn conclude(consumer: &Consumer, delivery: &dyn Delivery, ran: Ran) {
    let stats = &consumer.stats;
    match ran {
        Ran::Executed => {
            Stats::bump(&stats.executed);
            ack(consumer, delivery).await;
        }
        Ran::Replayed => {
            Stats::bump(&stats.replayed);
            ack(consumer, delivery).await;
        }
        Ran::Failed(error) => {
            Stats::bump(&stats.executed);
            let attempts = delivery.attempts();
            if attempts >= consumer.max_attempts {
                let why = DeadLetter {
                    op: consumer.op.to_string(),
                    error,
                    kind: "handler".into(),
                    attempts,
                };
                dead_letter(consumer, delivery, &why).await;
            } else {
                tracing::debug!(%error, attempts, "idem: handler failed; the message will be tried again");
                retry(consumer, delivery).await;
            }
        }
        Ran::NotRecorded(error) => {
            // Not the handler's fault, and not recorded: never acked, never dead-lettered.
            tracing::warn!(%error, "idem: the message's outcome is not recorded; it will be delivered again");
            retry(consumer, delivery).await;
        }
    }
}

/// Dead-letters a message that can never be handled.
async fn reject(consumer: &Consumer, delivery: &dyn Delivery, error: Error) {
    tracing::warn!(%error, "idem: dead-lettering a message that cannot be handled");
    let why = DeadLetter {
        op: consumer.op.to_string(),
        error: error.to_string(),
        kind: error.kind().to_owned(),
        attempts: delivery.attempts(),
    };
    consumer.stats.reject(error);
    dead_letter(consumer, delivery, &why).await;
}

async fn ack(consumer: &Consumer, delivery: &dyn Delivery) {
    match delivery.ack().await {
        Ok(()) => Stats::bump(&consumer.stats.acked),
        Err(error) => broker_error(consumer, &error),
    }
}

async fn retry(consumer: &Consumer, delivery: &dyn Delivery) {
    match delivery.retry(consumer.retry_delay).await {
        Ok(()) => Stats::bump(&consumer.stats.retried),
        Err(error) => broker_error(consumer, &error),
    }
}

async fn dead_letter(consumer: &Consumer, delivery: &dyn Delivery, why: &DeadLetter) {
    match delivery.dead_letter(why).await {
        Ok(()) => Stats::bump(&consumer.stats.dead_lettered),
        Err(error) => broker_error(consumer, &error),
    }
}

fn broker_error(consumer: &Consumer, error: &Error) {
    // The message stays unacked: the broker delivers it again and it replays.
    tracing::warn!(%error, "idem: the broker refused; the message will be delivered again");
    Stats::bump(&consumer.stats.broker_errors);
}
