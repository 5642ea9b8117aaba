//! Idempotent queue consumers: each message runs its handler as one idempotent call, keyed by
//! the message's id, and is acked only after the outcome is recorded.
//!
//! - `consumer.rs`: [`Consumer`], its options, counters ([`ConsumerReport`]) and pull loop
//!   (bounded in-flight messages, graceful shutdown).
//! - `process.rs`: one message: key, decode, call, then ack, retry or dead letter.
//! - `delivery.rs`: what a broker adapter implements ([`Source`], [`Delivery`]).
//! - `tx.rs`: handlers that write in a transaction of the store's database ([`TxPool`]).
//! - `recording.rs`: how the engine tells a consumer that an outcome went unrecorded.
//! - `nats.rs` (feature `nats`): NATS JetStream pull consumers, `Nats-Msg-Id`.
//! - `amqp.rs` (feature `amqp`): RabbitMQ / AMQP 0-9-1 consumers, the `message-id` property.
//!
//! Publishing with an id (for the outbox relay, `idem_runtime::outbox`) is [`Publisher`].

mod consumer;
mod delivery;
mod group;
mod process;
mod publish;
pub(crate) mod recording;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod tx;

#[cfg(feature = "amqp")]
#[cfg_attr(docsrs, doc(cfg(feature = "amqp")))]
pub mod amqp;
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub mod nats;

pub use self::consumer::{Consumer, ConsumerReport, KeyFn};
pub use self::delivery::{DeadLetter, Delivery, Source};
pub use self::publish::Publisher;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub use self::tx::TxPool;
