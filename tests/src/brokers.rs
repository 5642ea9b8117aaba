//! The message brokers the queue tests run on (NATS JetStream, RabbitMQ), each test on its own
//! stream or queues, deleted at the end (and expiring on their own if a test dies first).

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::PullConsumer, Context};
use futures_util::StreamExt;
use lapin::options::{BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

use crate::servers_required;

/// `IDEM_TEST_NATS_URL`, default `nats://127.0.0.1:4222`.
pub fn nats_url() -> String {
    std::env::var("IDEM_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// `IDEM_TEST_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`.
pub fn amqp_url() -> String {
    std::env::var("IDEM_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

fn unreachable(what: &str, url: &str, error: &dyn std::fmt::Display) {
    assert!(
        !servers_required(),
        "{what} at {url} is required under CI=true and unreachable: {error}"
    );
    eprintln!(
        "\n*** SKIPPED: {what} at {url} unreachable ({error}); set the URL or start it ***\n"
    );
}

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// One test's JetStream stream: messages on `<base>.in`, dead letters on `<base>.dead`.
#[derive(Debug)]
pub struct NatsFixture {
    pub js: Context,
    pub stream: String,
    pub subject: String,
    pub dead: String,
}

/// A fresh stream on the shared server, or `None` (skipped loudly) when it is unreachable.
pub async fn nats() -> Option<NatsFixture> {
    let url = nats_url();
    let client = match idem_runtime::queue::nats::connect(&url).await {
        Ok(client) => client,
        Err(e) => {
            unreachable("NATS", &url, &e);
            return None;
        }
    };
    Some(NatsFixture::on(jetstream::new(client)).await)
}

impl NatsFixture {
    /// A fresh stream through `js`.
    pub async fn on(js: Context) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let stream = format!("IDEM_TEST_{id}");
        let base = format!("idem-test.{id}");
        js.create_stream(jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![format!("{base}.>")],
            max_age: Duration::from_secs(600),
            duplicate_window: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .unwrap();
        Self {
            js,
            stream,
            subject: format!("{base}.in"),
            dead: format!("{base}.dead"),
        }
    }

    /// A durable pull consumer of the input subject with this ack wait.
    pub async fn consumer(&self, name: &str, ack_wait: Duration) -> PullConsumer {
        let stream = self.js.get_stream(&self.stream).await.unwrap();
        stream
            .create_consumer(pull::Config {
                durable_name: Some(name.to_owned()),
                filter_subject: self.subject.clone(),
                ack_wait,
                ..Default::default()
            })
            .await
            .unwrap()
    }

    /// Publishes a message, with `Nats-Msg-Id` when `id` is given.
    pub async fn publish(&self, id: Option<&str>, payload: &[u8]) {
        let mut message =
            jetstream::message::PublishMessage::build().payload(payload.to_vec().into());
        if let Some(id) = id {
            message = message.message_id(id);
        }
        self.js
            .send_publish(self.subject.clone(), message)
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// The dead letters so far: (headers as name=value pairs, payload).
    pub async fn dead_letters(&self) -> Vec<(Vec<(String, String)>, Vec<u8>)> {
        let stream = self.js.get_stream(&self.stream).await.unwrap();
        let reader = stream
            .create_consumer(pull::Config {
                filter_subject: self.dead.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut batch = reader
            .fetch()
            .max_messages(1000)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .unwrap();
        let mut out = Vec::new();
        while let Some(Ok(message)) = batch.next().await {
            let headers = message
                .headers
                .iter()
                .flat_map(|h| h.iter())
                .flat_map(|(name, values)| {
                    values
                        .iter()
                        .map(move |v| (name.to_string(), v.as_str().to_owned()))
                })
                .collect();
            out.push((headers, message.payload.to_vec()));
        }
        out
    }

    /// The consumer's (pending, ack pending) counts.
    pub async fn backlog(&self, consumer: &mut PullConsumer) -> (u64, usize) {
        let info = consumer.info().await.unwrap();
        (info.num_pending, info.num_ack_pending)
    }

    /// Deletes the stream.
    pub async fn delete(self) {
        let _ = self.js.delete_stream(&self.stream).await;
    }
}

/// One test's queues on the shared RabbitMQ: `queue` and `dead`.
#[derive(Debug)]
pub struct AmqpFixture {
    pub connection: lapin::Connection,
    pub channel: lapin::Channel,
    pub queue: String,
    pub dead: String,
}

/// Fresh queues, or `None` (skipped loudly) when RabbitMQ is unreachable.
pub async fn amqp() -> Option<AmqpFixture> {
    let url = amqp_url();
    let connection = match idem_runtime::queue::amqp::connect(&url).await {
        Ok(connection) => connection,
        Err(e) => {
            unreachable("RabbitMQ", &url, &e);
            return None;
        }
    };
    let channel = idem_runtime::queue::amqp::channel(&connection)
        .await
        .unwrap();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let fixture = AmqpFixture {
        connection,
        channel,
        queue: format!("idem-test.{id}"),
        dead: format!("idem-test.{id}.dead"),
    };
    for queue in [&fixture.queue, &fixture.dead] {
        let mut args = FieldTable::default();
        // Deleted by the broker after ten idle minutes if the test dies before deleting it.
        args.insert("x-expires".into(), AMQPValue::LongInt(600_000));
        fixture
            .channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args,
            )
            .await
            .unwrap();
    }
    Some(fixture)
}

impl AmqpFixture {
    /// A new connection's channel (confirms on), as a second consumer process would have.
    pub async fn second_channel(&self) -> (lapin::Connection, lapin::Channel) {
        let connection = idem_runtime::queue::amqp::connect(&amqp_url())
            .await
            .unwrap();
        let channel = idem_runtime::queue::amqp::channel(&connection)
            .await
            .unwrap();
        (connection, channel)
    }

    /// Publishes to the queue, with `message-id` when `id` is given, and waits for the confirm.
    pub async fn publish(&self, id: Option<&str>, payload: &[u8]) {
        let mut properties = BasicProperties::default().with_delivery_mode(2);
        if let Some(id) = id {
            properties = properties.with_message_id(id.into());
        }
        let confirm = self
            .channel
            .basic_publish(
                "".into(),
                self.queue.as_str().into(),
                Default::default(),
                payload,
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
    }

    /// Takes every message of `queue`: (headers, message id, payload).
    pub async fn drain(&self, queue: &str) -> Vec<(FieldTable, Option<String>, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(message) = self
            .channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            let props = &message.delivery.properties;
            out.push((
                props.headers().clone().unwrap_or_default(),
                props.message_id().as_ref().map(|s| s.as_str().to_owned()),
                message.delivery.data.clone(),
            ));
        }
        out
    }

    /// Messages ready in `queue` (not counting unacked ones).
    pub async fn ready(&self, queue: &str) -> u32 {
        self.channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .message_count()
    }

    /// Deletes both queues.
    pub async fn delete(self) {
        for queue in [&self.queue, &self.dead] {
            let _ = self
                .channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = self.connection.close(200, "done".into()).await;
    }
}

/// Header text of an AMQP header table entry.
pub fn amqp_header(headers: &FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        AMQPValue::LongLongInt(n) => Some(n.to_string()),
        AMQPValue::LongInt(n) => Some(n.to_string()),
        _ => None,
    }
}
