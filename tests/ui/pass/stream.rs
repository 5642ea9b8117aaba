#![deny(warnings)]

use futures_util::{stream, StreamExt};
use idem_runtime::{idempotent, Idem, Streamed};

#[path = "../common.rs"]
mod common;
use common::AppError;

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Token {
    pub text: String,
}

/// A streamed LLM response: the chunks are journaled, replayed and followed live.
#[idempotent(key = (prompt), stream)]
async fn draft(prompt: &str, words: usize) -> Result<Streamed<Token, AppError>, AppError> {
    let text = prompt.to_owned();
    let tokens = stream::iter(0..words).map(move |i| {
        Ok(Token {
            text: format!("{text}{i}"),
        })
    });
    Ok(Streamed::new(tokens))
}

pub struct Llm {
    idem: Idem,
}

impl Llm {
    /// A method with its own store, and errors recorded with the stream.
    #[idempotent(name = "Llm::chat", key = (prompt), stream, store = self.idem)]
    pub async fn chat(&self, prompt: String) -> Result<Streamed<String, AppError>, AppError> {
        Ok(Streamed::new(stream::iter([Ok(prompt)])))
    }
}

fn main() {
    let _ = draft("hello", 3);
    let llm = Llm {
        idem: Idem::memory(),
    };
    let _ = llm.chat("hi".into());
}
