//! The streaming side of the model's client (reqwest): `POST /v1/stream` read as server-sent
//! events, one token per event, as they arrive. A stream that ends without `[DONE]` was broken
//! off (the model billed what it sent): it ends with an error, so the caller knows to ask again.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{stream, Stream};
use serde::{Deserialize, Serialize};

use super::model_stream::{StreamRequest, TokenEvent};
use super::sse::SseParser;

/// One token of a streamed draft (the chunk idem journals and replays).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Token {
    /// Its text.
    pub(crate) text: String,
}

/// A client of the model server's streaming endpoint.
#[derive(Debug, Clone)]
pub(crate) struct StreamClient {
    http: reqwest::Client,
    endpoint: String,
}

impl StreamClient {
    /// A client of the server at `base_url` (`http://host:port`). A stream may last as long as
    /// the model writes, so the limit is on each wait for the next bytes, not on the whole.
    pub(crate) fn new(base_url: &str, read_timeout: Duration) -> reqwest::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .read_timeout(read_timeout)
                .build()?,
            endpoint: format!("{}/v1/stream", base_url.trim_end_matches('/')),
        })
    }

    /// Asks for a draft for `prompt` on behalf of `user`, and returns its tokens as they come.
    pub(crate) async fn stream(
        &self,
        prompt: &str,
        user: &str,
    ) -> Result<impl Stream<Item = Result<Token, String>> + Send + 'static, String> {
        let response = self
            .http
            .post(&self.endpoint)
            .json(&StreamRequest {
                prompt: prompt.to_owned(),
                user: user.to_owned(),
            })
            .send()
            .await
            .map_err(|e| format!("model stream: {e}"))?
            .error_for_status()
            .map_err(|e| format!("model stream: {e}"))?;
        Ok(tokens(response))
    }
}

/// Where a token stream is: the body still being read, the events parsed but not yet yielded.
struct Reading {
    body: Option<reqwest::Response>,
    parser: SseParser,
    events: VecDeque<String>,
    received: u64,
}

/// The tokens of an SSE response, ending at `[DONE]`, or with an error if the body ends first.
fn tokens(response: reqwest::Response) -> impl Stream<Item = Result<Token, String>> + Send {
    let reading = Reading {
        body: Some(response),
        parser: SseParser::default(),
        events: VecDeque::new(),
        received: 0,
    };
    stream::unfold(reading, |mut r| async move {
        loop {
            if let Some(data) = r.events.pop_front() {
                if data == "[DONE]" {
                    return None;
                }
                return match serde_json::from_str::<TokenEvent>(&data) {
                    Ok(event) => {
                        r.received += 1;
                        Some((Ok(Token { text: event.token }), r))
                    }
                    Err(e) => {
                        r.body = None;
                        r.events.clear();
                        Some((Err(format!("model stream: bad event {data:?}: {e}")), r))
                    }
                };
            }
            // `None` once the body ended: the stream is over (its error was yielded).
            let body = r.body.as_mut()?;
            let broken = match body.chunk().await {
                Ok(Some(bytes)) => {
                    let events = r.parser.push(&bytes);
                    r.events.extend(events);
                    continue;
                }
                Ok(None) => "the connection closed".to_owned(),
                Err(e) => format!("reading failed ({e})"),
            };
            r.body = None;
            let error = format!(
                "model stream broken off after {} tokens, without [DONE]: {broken} (the model billed what it sent)",
                r.received
            );
            return Some((Err(error), r));
        }
    })
}
