//! [`Publisher`]: publishing a message under an id the broker and the consumer de-duplicate by.

/// Publishes messages with a message id, waiting for the broker to confirm each: what the
/// outbox relay publishes through. Implemented for NATS JetStream (`queue::nats::JetStreamPublisher`)
/// and AMQP (`queue::amqp::AmqpPublisher`).
#[async_trait::async_trait]
pub trait Publisher: Send + Sync {
    /// Publishes `payload` to `destination` (a subject, or a routing key) with message id `id`;
    /// returns once the broker confirmed it (JetStream's publish ack, an AMQP publisher
    /// confirm). A message published twice with one id reaches consumers at most twice, and an
    /// idem consumer runs its handler once.
    async fn publish(
        &self,
        destination: &str,
        id: &str,
        payload: &[u8],
    ) -> Result<(), crate::Error>;
}
