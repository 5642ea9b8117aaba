//! NATS JetStream: a pull consumer as a [`Source`], keyed by `Nats-Msg-Id`, and a
//! [`Publisher`] that sets it (JetStream's own de-duplication window then catches a relay's
//! retries too).
//!
//! ```no_run
//! use idem_runtime::queue::{nats, Consumer};
//! use idem_runtime::Idem;
//!
//! # async fn demo() -> Result<(), idem_runtime::Error> {
//! let idem = Idem::open("sqlite://idem.db").await?;
//! let client = nats::connect("nats://127.0.0.1:4222").await?;
//! let js = async_nats::jetstream::new(client);
//! let consumer = nats::pull_consumer(&js, "ORDERS", "orders.*", "billing").await?;
//! let source = nats::JetStreamSource::new(js.clone(), &consumer, "orders.dead", 16).await?;
//! Consumer::new(idem, "billing.charge")
//!     .concurrency(16)
//!     .run(source, |order: u64| async move { Ok::<_, std::io::Error>(order * 100) }, async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .await?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, Context};
use futures_util::StreamExt;

use super::delivery::{DeadLetter, Delivery, Source};
use super::publish::Publisher;
use crate::error::Error;

/// The header JetStream de-duplicates publishes by, and this consumer keys messages by.
pub const MESSAGE_ID: &str = "Nats-Msg-Id";

/// Connects to a NATS server; a server that does not answer is [`Error::Broker`] at once.
pub async fn connect(url: &str) -> Result<async_nats::Client, Error> {
    async_nats::connect(url)
        .await
        .map_err(|e| Error::broker("connect", "", url, e))
}

/// Gets or creates the stream `stream` over `subjects` (`orders.*`) and a durable pull
/// consumer `durable` on it with explicit acks: the setup the adapter needs. For other
/// settings (ack wait, max deliveries), create the consumer with async-nats directly.
pub async fn pull_consumer(
    js: &Context,
    stream: &str,
    subjects: &str,
    durable: &str,
) -> Result<PullConsumer, Error> {
    let stream_handle = js
        .get_or_create_stream(jetstream::stream::Config {
            name: stream.to_owned(),
            subjects: vec![subjects.to_owned()],
            ..Default::default()
        })
        .await
        .map_err(|e| Error::broker("create stream", "", stream, e))?;
    stream_handle
        .get_or_create_consumer(
            durable,
            pull::Config {
                durable_name: Some(durable.to_owned()),
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| Error::broker("create consumer", "", stream, e))
}

/// A JetStream pull consumer's messages, pulled in batches of at most the consumer's
/// concurrency, with failed messages dead-lettered to a subject (which a stream must capture,
/// or the dead letter is refused and the message stays unacked).
pub struct JetStreamSource {
    name: String,
    js: Context,
    dead_letters: String,
    messages: pull::Stream,
}

impl std::fmt::Debug for JetStreamSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamSource")
            .field("stream", &self.name)
            .field("dead_letters", &self.dead_letters)
            .finish_non_exhaustive()
    }
}

impl JetStreamSource {
    /// Pulls from `consumer`, `batch` messages at a time (give the consumer's concurrency),
    /// dead-lettering to the subject `dead_letters`.
    pub async fn new(
        js: Context,
        consumer: &PullConsumer,
        dead_letters: impl Into<String>,
        batch: usize,
    ) -> Result<Self, Error> {
        let name = consumer.cached_info().stream_name.clone();
        let messages = consumer
            .stream()
            .max_messages_per_batch(batch.max(1))
            .heartbeat(Duration::from_secs(5))
            .messages()
            .await
            .map_err(|e| Error::broker("pull", "", &name, e))?;
        Ok(Self {
            name,
            js,
            dead_letters: dead_letters.into(),
            messages,
        })
    }
}

#[async_trait::async_trait]
impl Source for JetStreamSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn next(&mut self) -> Option<Result<Box<dyn Delivery>, Error>> {
        let next = self.messages.next().await?;
        Some(match next {
            Ok(message) => Ok(Box::new(NatsDelivery {
                message,
                js: self.js.clone(),
                dead_letters: self.dead_letters.clone(),
            })),
            Err(e) => Err(Error::broker("pull", "", &self.name, e)),
        })
    }

    async fn stop(&mut self) -> Result<(), Error> {
        // Pulled-but-unhandled messages are never acked: JetStream redelivers them after the
        // consumer's ack wait. Nothing to send.
        Ok(())
    }
}

struct NatsDelivery {
    message: jetstream::Message,
    js: Context,
    dead_letters: String,
}

impl NatsDelivery {
    fn subject(&self) -> &str {
        self.message.subject.as_str()
    }
}

/// Header values are one line.
fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

#[async_trait::async_trait]
impl Delivery for NatsDelivery {
    fn id(&self) -> Option<&str> {
        let id = self.message.headers.as_ref()?.get(MESSAGE_ID)?.as_str();
        (!id.is_empty()).then_some(id)
    }

    fn payload(&self) -> &[u8] {
        &self.message.payload
    }

    fn attempts(&self) -> u32 {
        self.message.info().map_or(1, |info| {
            u32::try_from(info.delivered.max(1)).unwrap_or(u32::MAX)
        })
    }

    fn describe(&self) -> String {
        match self.message.info() {
            Ok(info) => format!("{} #{}", info.stream, info.stream_sequence),
            Err(_) => self.subject().to_owned(),
        }
    }

    async fn ack(&self) -> Result<(), Error> {
        self.message
            .ack()
            .await
            .map_err(|e| Error::broker("ack", "", self.subject(), e))
    }

    async fn retry(&self, delay: Duration) -> Result<(), Error> {
        self.message
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(|e| Error::broker("nak", "", self.subject(), e))
    }

    async fn dead_letter(&self, why: &DeadLetter) -> Result<(), Error> {
        let mut headers = self.message.headers.clone().unwrap_or_default();
        headers.insert("idem-op", why.op.as_str());
        headers.insert("idem-error", one_line(&why.error).as_str());
        headers.insert("idem-error-kind", why.kind.as_str());
        headers.insert("idem-attempts", why.attempts.to_string().as_str());
        headers.insert("idem-subject", self.subject());
        // A retried dead letter of the same delivery is de-duplicated by JetStream.
        let dead_id = match (self.id(), self.message.info()) {
            (Some(id), _) => format!("dead:{id}"),
            (None, Ok(info)) => format!("dead:{}:{}", info.stream, info.stream_sequence),
            (None, Err(_)) => String::new(),
        };
        let mut publish = PublishMessage::build()
            .payload(self.message.payload.clone())
            .headers(headers);
        if !dead_id.is_empty() {
            publish = publish.message_id(dead_id);
        }
        let target = self.dead_letters.as_str();
        self.js
            .send_publish(target.to_owned(), publish)
            .await
            .map_err(|e| Error::broker("dead-letter", &why.op, target, e))?
            .await
            .map_err(|e| Error::broker("dead-letter", &why.op, target, e))?;
        self.message
            .ack_with(AckKind::Term)
            .await
            .map_err(|e| Error::broker("ack", &why.op, self.subject(), e))
    }
}

/// Publishes to JetStream with `Nats-Msg-Id`, waiting for each publish ack.
#[derive(Debug, Clone)]
pub struct JetStreamPublisher {
    js: Context,
}

impl JetStreamPublisher {
    /// Publishes through `js`.
    pub fn new(js: Context) -> Self {
        Self { js }
    }
}

#[async_trait::async_trait]
impl Publisher for JetStreamPublisher {
    async fn publish(&self, destination: &str, id: &str, payload: &[u8]) -> Result<(), Error> {
        let publish = PublishMessage::build()
            .payload(payload.to_vec().into())
            .message_id(id);
        self.js
            .send_publish(destination.to_owned(), publish)
            .await
            .map_err(|e| Error::broker("publish", "", destination, e))?
            .await
            .map_err(|e| Error::broker("publish", "", destination, e))?;
        Ok(())
    }
}
