//! The run's stream (NATS: ack wait 1 s, so slow handlers are redelivered while they run) or
//! queues (RabbitMQ), publishing, a source for a worker, and the clean-up.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, message::PublishMessage};
use idem_runtime::queue::{amqp, nats, Source};
use idem_runtime::Error;
use lapin::options::{BasicPublishOptions, QueueDeleteOptions};
use lapin::BasicProperties;

/// A broker connection for one run.
pub(crate) enum Broker {
    Nats {
        js: jetstream::Context,
        run: String,
    },
    Amqp {
        channel: lapin::Channel,
        _connection: lapin::Connection,
        run: String,
    },
}

/// NATS's de-duplication window for the run's stream: short, so the example's re-published
/// duplicates (sent after it) reach the consumer as a publisher's late retry would.
pub(crate) const DUP_WINDOW: Duration = Duration::from_secs(1);

impl Broker {
    pub(crate) async fn connect(url: &str, run: &str) -> Result<Self, Error> {
        if url.starts_with("nats") {
            let js = jetstream::new(nats::connect(url).await?);
            Ok(Broker::Nats {
                js,
                run: run.to_owned(),
            })
        } else {
            let connection = amqp::connect(url).await?;
            let channel = amqp::channel(&connection).await?;
            Ok(Broker::Amqp {
                channel,
                _connection: connection,
                run: run.to_owned(),
            })
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Broker::Nats { .. } => "nats",
            Broker::Amqp { .. } => "amqp",
        }
    }

    fn stream(run: &str) -> String {
        format!("IDEM_CONSUMER_{run}")
    }

    fn queue(run: &str) -> String {
        format!("idem-consumer.{run}")
    }

    pub(crate) async fn setup(&self) -> Result<(), Error> {
        match self {
            Broker::Nats { js, run } => {
                let stream = js
                    .create_stream(jetstream::stream::Config {
                        name: Self::stream(run),
                        subjects: vec![format!("idem-consumer.{run}.>")],
                        duplicate_window: DUP_WINDOW,
                        max_age: Duration::from_secs(3600),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| Error::broker("create stream", "", run, e))?;
                stream
                    .create_consumer(pull::Config {
                        durable_name: Some("worker".into()),
                        filter_subject: format!("idem-consumer.{run}.in"),
                        ack_wait: Duration::from_secs(1),
                        max_ack_pending: 10_000,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| Error::broker("create consumer", "", run, e))?;
                Ok(())
            }
            Broker::Amqp { channel, run, .. } => {
                amqp::declare_queue(channel, &Self::queue(run)).await?;
                amqp::declare_queue(channel, &format!("{}.dead", Self::queue(run))).await
            }
        }
    }

    /// Publishes many messages, waiting for the broker's confirmations at the end.
    pub(crate) async fn publish_all(&self, messages: &[(String, Vec<u8>)]) -> Result<(), Error> {
        match self {
            Broker::Nats { js, run } => {
                let subject = format!("idem-consumer.{run}.in");
                // Acks are awaited every 256 publishes: async-nats bounds the publishes awaiting
                // their ack, and a publish past the bound waits for one to be read.
                let mut acks = Vec::with_capacity(256);
                for (id, payload) in messages {
                    if acks.len() == 256 {
                        for ack in acks.drain(..) {
                            let ack: async_nats::jetstream::context::PublishAckFuture = ack;
                            ack.await
                                .map_err(|e| Error::broker("publish", "", &subject, e))?;
                        }
                    }
                    let message = PublishMessage::build()
                        .payload(payload.clone().into())
                        .message_id(id);
                    let ack = js
                        .send_publish(subject.clone(), message)
                        .await
                        .map_err(|e| Error::broker("publish", "", &subject, e))?;
                    acks.push(ack);
                }
                for ack in acks {
                    ack.await
                        .map_err(|e| Error::broker("publish", "", &subject, e))?;
                }
                Ok(())
            }
            Broker::Amqp { channel, run, .. } => {
                let queue = Self::queue(run);
                let mut confirms = Vec::with_capacity(messages.len());
                for (id, payload) in messages {
                    let properties = BasicProperties::default()
                        .with_message_id(id.as_str().into())
                        .with_delivery_mode(2);
                    let confirm = channel
                        .basic_publish(
                            "".into(),
                            queue.as_str().into(),
                            BasicPublishOptions::default(),
                            payload,
                            properties,
                        )
                        .await
                        .map_err(|e| Error::broker("publish", "", &queue, e))?;
                    confirms.push(confirm);
                }
                for confirm in confirms {
                    confirm
                        .await
                        .map_err(|e| Error::broker("publish", "", &queue, e))?;
                }
                Ok(())
            }
        }
    }

    /// A source for a worker, `in_flight` at most.
    pub(crate) async fn source(&self, in_flight: usize) -> Result<Box<dyn Source>, Error> {
        match self {
            Broker::Nats { js, run } => {
                let stream = js
                    .get_stream(Self::stream(run))
                    .await
                    .map_err(|e| Error::broker("get stream", "", run, e))?;
                let consumer = stream
                    .get_consumer::<pull::Config>("worker")
                    .await
                    .map_err(|e| Error::broker("get consumer", "", run, e))?;
                let source = nats::JetStreamSource::new(
                    js.clone(),
                    &consumer,
                    format!("idem-consumer.{run}.dead"),
                    in_flight,
                )
                .await?;
                Ok(Box::new(source))
            }
            Broker::Amqp { channel, run, .. } => {
                let queue = Self::queue(run);
                let source = amqp::AmqpSource::new(
                    channel.clone(),
                    &queue,
                    format!("{queue}.dead"),
                    u16::try_from(in_flight).unwrap_or(u16::MAX),
                )
                .await?;
                Ok(Box::new(source))
            }
        }
    }

    pub(crate) async fn delete(&self) {
        match self {
            Broker::Nats { js, run } => {
                let _ = js.delete_stream(Self::stream(run)).await;
            }
            Broker::Amqp { channel, run, .. } => {
                for queue in [Self::queue(run), format!("{}.dead", Self::queue(run))] {
                    let _ = channel
                        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }
            }
        }
    }
}
