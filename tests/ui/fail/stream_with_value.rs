use futures_util::stream;
use idem_runtime::{idempotent, Streamed};

#[path = "../common.rs"]
mod common;
use common::AppError;

#[idempotent(key = (prompt), stream = true)]
async fn draft(prompt: &str) -> Result<Streamed<String, AppError>, AppError> {
    Ok(Streamed::new(stream::iter([Ok(prompt.to_owned())])))
}

fn main() {}
