//! An error type that cannot hold idem's errors: return `CallError<E>`; `?` still works in the
//! body, also with `cache_errors` and a predicate.
use idem_runtime::{idempotent, CallError};

#[idempotent(key = (path))]
async fn read(path: &str) -> Result<String, CallError<std::io::Error>> {
    Ok(std::fs::read_to_string(path)?)
}

#[derive(Debug, serde::Serialize, serde::Deserialize, thiserror::Error)]
#[error("parse error at {0}")]
struct ParseError(usize);

fn permanent(e: &CallError<ParseError>) -> bool {
    matches!(e, CallError::Body(_))
}

#[idempotent(key = (text), cache_errors = permanent)]
async fn parse(text: &str) -> Result<u32, CallError<ParseError>> {
    text.parse().map_err(|_| ParseError(0).into())
}

fn main() {
    let _ = (read("Cargo.toml"), parse("1"));
}
