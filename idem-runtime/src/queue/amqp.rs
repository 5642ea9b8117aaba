//! RabbitMQ (AMQP 0-9-1): a queue's consumer as a [`Source`], keyed by the `message-id`
//! property, with at most the consumer's concurrency of unacked messages (`basic_qos`
//! prefetch), and a [`Publisher`] that sets `message-id` and waits for publisher confirms.
//!
//! RabbitMQ has no ack wait: a message whose consumer dies unacked goes back to the queue when
//! the channel closes. A handler that fails is retried by publishing the message again (same
//! `message-id`, its try counted in the `idem-attempts` header) and acking the delivery, once
//! the broker confirmed the copy; quorum queues' `x-delivery-count` is counted too.
//!
//! ```no_run
//! use idem_runtime::queue::{amqp, Consumer};
//! use idem_runtime::Idem;
//!
//! # async fn demo() -> Result<(), idem_runtime::Error> {
//! let idem = Idem::open("sqlite://idem.db").await?;
//! let connection = amqp::connect("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
//! let channel = amqp::channel(&connection).await?;
//! amqp::declare_queue(&channel, "orders").await?;
//! amqp::declare_queue(&channel, "orders.dead").await?;
//! let source = amqp::AmqpSource::new(channel, "orders", "orders.dead", 16).await?;
//! Consumer::new(idem, "billing.charge")
//!     .concurrency(16)
//!     .run(source, |order: u64| async move { Ok::<_, std::io::Error>(order * 100) }, async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .await?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use super::delivery::{DeadLetter, Delivery, Source};
use super::publish::Publisher;
use crate::error::Error;

/// The header that counts the tries of a message this adapter republished after a failure.
pub const ATTEMPTS_HEADER: &str = "idem-attempts";

/// Connects to an AMQP broker (`amqp://user:password@host:5672/%2f`); a broker that does not
/// answer is [`Error::Broker`] at once.
pub async fn connect(url: &str) -> Result<Connection, Error> {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .map_err(|e| Error::broker("connect", "", url, e))
}

/// Opens a channel with publisher confirms on (what the source's retries and dead letters and
/// the publisher need).
pub async fn channel(connection: &Connection) -> Result<Channel, Error> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| Error::broker("open channel", "", "", e))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| Error::broker("confirm select", "", "", e))?;
    Ok(channel)
}

/// Declares a durable queue (nothing happens if it exists with the same settings).
pub async fn declare_queue(channel: &Channel, queue: &str) -> Result<(), Error> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| Error::broker("declare queue", "", queue, e))?;
    Ok(())
}

/// Publishes `payload` through the default exchange to `queue` and waits for the confirm.
async fn publish_confirmed(
    channel: &Channel,
    queue: &str,
    payload: &[u8],
    properties: BasicProperties,
    action: &'static str,
    op: &str,
) -> Result<(), Error> {
    let confirm = channel
        .basic_publish(
            ShortString::from(""),
            queue.into(),
            BasicPublishOptions::default(),
            payload,
            properties,
        )
        .await
        .map_err(|e| Error::broker(action, op, queue, e))?
        .await
        .map_err(|e| Error::broker(action, op, queue, e))?;
    if confirm.is_nack() {
        return Err(Error::broker(
            action,
            op,
            queue,
            "the broker refused the message (publisher confirm nack)",
        ));
    }
    Ok(())
}

/// The messages of one queue, at most `prefetch` unacked at once.
pub struct AmqpSource {
    queue: String,
    channel: Channel,
    dead_letters: String,
    consumer: lapin::Consumer,
}

impl std::fmt::Debug for AmqpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSource")
            .field("queue", &self.queue)
            .field("dead_letters", &self.dead_letters)
            .finish_non_exhaustive()
    }
}

impl AmqpSource {
    /// Consumes `queue` on `channel` (made by [`channel`]: confirms on), `prefetch` unacked
    /// messages at most (give the consumer's concurrency), dead-lettering to the queue
    /// `dead_letters` (declare it first).
    pub async fn new(
        channel: Channel,
        queue: &str,
        dead_letters: impl Into<String>,
        prefetch: u16,
    ) -> Result<Self, Error> {
        channel
            .basic_qos(prefetch.max(1), BasicQosOptions::default())
            .await
            .map_err(|e| Error::broker("qos", "", queue, e))?;
        let consumer = channel
            .basic_consume(
                queue.into(),
                ShortString::from(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| Error::broker("consume", "", queue, e))?;
        Ok(Self {
            queue: queue.to_owned(),
            channel,
            dead_letters: dead_letters.into(),
            consumer,
        })
    }
}

#[async_trait::async_trait]
impl Source for AmqpSource {
    fn name(&self) -> &str {
        &self.queue
    }

    async fn next(&mut self) -> Option<Result<Box<dyn Delivery>, Error>> {
        let Some(next) = self.consumer.next().await else {
            // Only `stop` ends a subscription on purpose, and it is never followed by `next`.
            return Some(Err(Error::broker(
                "consume",
                "",
                &self.queue,
                "the broker ended the subscription (connection or channel closed)",
            )));
        };
        Some(match next {
            Ok(delivery) => Ok(Box::new(AmqpDelivery {
                delivery,
                channel: self.channel.clone(),
                queue: self.queue.clone(),
                dead_letters: self.dead_letters.clone(),
            })),
            Err(e) => Err(Error::broker("consume", "", &self.queue, e)),
        })
    }

    async fn stop(&mut self) -> Result<(), Error> {
        // Deliveries already prefetched stay unacked and go back to the queue with the channel.
        self.channel
            .basic_cancel(self.consumer.tag(), BasicCancelOptions::default())
            .await
            .map_err(|e| Error::broker("cancel", "", &self.queue, e))
    }
}

struct AmqpDelivery {
    delivery: lapin::message::Delivery,
    channel: Channel,
    queue: String,
    dead_letters: String,
}

fn int_header(headers: Option<&FieldTable>, name: &str) -> Option<u32> {
    let value = headers?.inner().get(name)?;
    let n: i64 = match value {
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::LongLongInt(n) => *n,
        _ => return None,
    };
    u32::try_from(n.max(0)).ok()
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.into())
}

impl AmqpDelivery {
    fn headers(&self) -> Option<&FieldTable> {
        self.delivery.properties.headers().as_ref()
    }

    /// A copy of the message's properties with `extra` headers set.
    fn properties_with(&self, extra: &[(&str, AMQPValue)]) -> BasicProperties {
        let mut headers = self.headers().cloned().unwrap_or_default();
        for (name, value) in extra {
            headers.insert((*name).into(), value.clone());
        }
        self.delivery.properties.clone().with_headers(headers)
    }
}

#[async_trait::async_trait]
impl Delivery for AmqpDelivery {
    fn id(&self) -> Option<&str> {
        let id = self.delivery.properties.message_id().as_ref()?.as_str();
        (!id.is_empty()).then_some(id)
    }

    fn payload(&self) -> &[u8] {
        &self.delivery.data
    }

    fn attempts(&self) -> u32 {
        let republished = int_header(self.headers(), ATTEMPTS_HEADER).unwrap_or(0);
        let redelivered = int_header(self.headers(), "x-delivery-count").unwrap_or(0);
        republished.max(redelivered).saturating_add(1)
    }

    fn describe(&self) -> String {
        format!("{} delivery #{}", self.queue, self.delivery.delivery_tag)
    }

    async fn ack(&self) -> Result<(), Error> {
        let acked = self
            .delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(|e| Error::broker("ack", "", &self.queue, e))?;
        if !acked {
            // lapin answers `false` when the channel closed under the delivery: not acked.
            return Err(Error::broker(
                "ack",
                "",
                &self.queue,
                "the channel closed before the ack; the broker delivers the message again",
            ));
        }
        Ok(())
    }

    async fn retry(&self, delay: Duration) -> Result<(), Error> {
        tokio::time::sleep(delay).await;
        let tries = i64::from(self.attempts());
        let properties = self.properties_with(&[(ATTEMPTS_HEADER, AMQPValue::LongLongInt(tries))]);
        // The copy first, confirmed; then the ack. A crash between them leaves two copies with
        // one message id: the consumer runs the handler for one of them.
        publish_confirmed(
            &self.channel,
            &self.queue,
            &self.delivery.data,
            properties,
            "retry",
            "",
        )
        .await?;
        self.ack().await
    }

    async fn dead_letter(&self, why: &DeadLetter) -> Result<(), Error> {
        let properties = self.properties_with(&[
            ("idem-op", text(&why.op)),
            ("idem-error", text(&why.error)),
            ("idem-error-kind", text(&why.kind)),
            (
                "idem-attempts",
                AMQPValue::LongLongInt(i64::from(why.attempts)),
            ),
            ("idem-queue", text(&self.queue)),
        ]);
        publish_confirmed(
            &self.channel,
            &self.dead_letters,
            &self.delivery.data,
            properties,
            "dead-letter",
            &why.op,
        )
        .await?;
        self.ack().await
    }
}

/// Publishes through the default exchange to the queue named by the destination, persistent,
/// with `message-id`, waiting for each publisher confirm.
#[derive(Debug, Clone)]
pub struct AmqpPublisher {
    channel: Channel,
}

impl AmqpPublisher {
    /// Publishes on `channel` (made by [`channel`]: confirms on).
    pub fn new(channel: Channel) -> Self {
        Self { channel }
    }
}

#[async_trait::async_trait]
impl Publisher for AmqpPublisher {
    async fn publish(&self, destination: &str, id: &str, payload: &[u8]) -> Result<(), Error> {
        let properties = BasicProperties::default()
            .with_message_id(id.into())
            .with_delivery_mode(2);
        publish_confirmed(
            &self.channel,
            destination,
            payload,
            properties,
            "publish",
            "",
        )
        .await
    }
}
