//! [`Relay`]: publishes the outbox's pending messages, oldest first, with their ids as the
//! broker's message ids, and marks them sent once the broker confirmed them.

use std::future::Future;
use std::time::Duration;

use super::Outbox;
use crate::error::Error;
use crate::queue::Publisher;

/// Publishes an [`Outbox`]'s messages through a [`Publisher`]: each batch is published one
/// message at a time, each confirmed by the broker, then marked sent in one statement. A relay
/// killed before its mark publishes the batch again (same ids): de-duplicated downstream.
#[derive(Debug)]
pub struct Relay<P> {
    outbox: Outbox,
    publisher: P,
    batch: u32,
    idle: Duration,
}

impl<P: Publisher> Relay<P> {
    /// A relay of `outbox` through `publisher`: batches of 100, looking again every 50 ms when
    /// the outbox is empty.
    pub fn new(outbox: Outbox, publisher: P) -> Self {
        Self {
            outbox,
            publisher,
            batch: 100,
            idle: Duration::from_millis(50),
        }
    }

    /// Messages per batch (at least 1). Default 100.
    #[must_use]
    pub fn batch(mut self, n: u32) -> Self {
        self.batch = n.max(1);
        self
    }

    /// The pause when nothing is pending. Default 50 ms.
    #[must_use]
    pub fn idle(mut self, pause: Duration) -> Self {
        self.idle = pause;
        self
    }

    /// Publishes one batch and marks it sent; returns how many messages it published.
    pub async fn relay_once(&self) -> Result<usize, Error> {
        let pending = self.outbox.db().next_pending(self.batch).await?;
        let mut sent = Vec::with_capacity(pending.len());
        let mut failure = None;
        for message in &pending {
            match self
                .publisher
                .publish(&message.destination, &message.msg_id, &message.payload)
                .await
            {
                Ok(()) => sent.push(message.id),
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        // What was confirmed is marked even when a later publish failed.
        self.outbox.db().mark_sent(&sent).await?;
        match failure {
            Some(error) => Err(error),
            None => Ok(sent.len()),
        }
    }

    /// Relays until `shutdown` completes (after the batch under way); returns how many messages
    /// it published. A broker or store error ends it with that error.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) -> Result<u64, Error> {
        tokio::pin!(shutdown);
        let mut total = 0u64;
        loop {
            // Shutdown is looked at between batches: a batch is never cut between its publishes
            // and its mark (that would only republish it, but there is no need).
            tokio::select! {
                biased;
                () = &mut shutdown => return Ok(total),
                () = std::future::ready(()) => {}
            }
            let published = self.relay_once().await?;
            total += published as u64;
            if published == 0 {
                tokio::select! {
                    () = &mut shutdown => return Ok(total),
                    () = tokio::time::sleep(self.idle) => {}
                }
            }
        }
    }
}
