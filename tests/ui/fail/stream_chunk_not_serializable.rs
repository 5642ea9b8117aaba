use futures_util::stream;
use idem_runtime::{idempotent, Streamed};

#[path = "../common.rs"]
mod common;
use common::AppError;

pub struct Token(pub String);

#[idempotent(key = (prompt), stream)]
async fn draft(prompt: &str) -> Result<Streamed<Token, AppError>, AppError> {
    Ok(Streamed::new(stream::iter([Ok(Token(prompt.to_owned()))])))
}

fn main() {}
