//! A misspelt option gets "did you mean".
use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

#[idempotent(key = (id), tll = "1h")]
async fn charge(id: u64) -> Result<u64, AppError> {
    Ok(id)
}

fn main() {}
