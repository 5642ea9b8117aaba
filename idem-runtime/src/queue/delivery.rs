//! What a broker adapter gives the consumer: a [`Source`] of [`Delivery`]s, each of which can be
//! acked, handed back for another try, or dead-lettered.

use std::time::Duration;

use crate::error::Error;

/// Why a message goes to the dead letters, written into the dead letter's headers
/// (`idem-error`, `idem-error-kind`, `idem-attempts`, `idem-op`).
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The operation the consumer runs.
    pub op: String,
    /// The last error's text.
    pub error: String,
    /// `handler` for a handler that kept failing, or the [`Error::kind`] of a message that
    /// cannot be handled (`bad_message`).
    pub kind: String,
    /// How many times the message was delivered (or tried) before this.
    pub attempts: u32,
}

/// One message as the broker delivered it.
#[async_trait::async_trait]
pub trait Delivery: Send + Sync + 'static {
    /// The broker's message id (`Nats-Msg-Id`, AMQP `message-id`), if it has one.
    fn id(&self) -> Option<&str>;
    /// The payload.
    fn payload(&self) -> &[u8];
    /// How many times this message has been delivered or tried, this delivery included (1 for
    /// the first).
    fn attempts(&self) -> u32;
    /// What names this delivery in an error when it has no id (stream sequence, delivery tag).
    fn describe(&self) -> String;
    /// Acknowledges the message: the broker will not deliver it again.
    async fn ack(&self) -> Result<(), Error>;
    /// Hands the message back for another try, after `delay` where the broker supports it.
    async fn retry(&self, delay: Duration) -> Result<(), Error>;
    /// Publishes the message to the dead letters with `why`, then acknowledges it. Nothing is
    /// acked unless the dead letter was confirmed by the broker.
    async fn dead_letter(&self, why: &DeadLetter) -> Result<(), Error>;
}

/// Where deliveries come from: a pull consumer or a subscription of one broker.
#[async_trait::async_trait]
pub trait Source: Send + 'static {
    /// The stream or queue name, for errors.
    fn name(&self) -> &str;
    /// The next delivery; `None` when the broker ended the subscription; `Err` when the broker
    /// failed (the consumer stops pulling, finishes what it holds and returns the error).
    ///
    /// Cancel-safe: the consumer may drop the future before it is ready (at shutdown, and when
    /// it looks for deliveries already there to join a group), and a delivery the future had
    /// taken must not be lost then. A stream's `next()` is.
    async fn next(&mut self) -> Option<Result<Box<dyn Delivery>, Error>>;
    /// Stops the subscription: the consumer is shutting down. Deliveries not yet handed out go
    /// back to the broker.
    async fn stop(&mut self) -> Result<(), Error>;
}

/// A boxed source is a source (to pick the broker at run time).
#[async_trait::async_trait]
impl Source for Box<dyn Source> {
    fn name(&self) -> &str {
        (**self).name()
    }

    async fn next(&mut self) -> Option<Result<Box<dyn Delivery>, Error>> {
        (**self).next().await
    }

    async fn stop(&mut self) -> Result<(), Error> {
        (**self).stop().await
    }
}
