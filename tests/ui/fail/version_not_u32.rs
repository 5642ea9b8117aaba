use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

#[idempotent(key = (id), version = "2")]
async fn charge(id: u64) -> Result<u64, AppError> {
    Ok(id)
}

#[idempotent(key = (id), version = 5_000_000_000)]
async fn refund(id: u64) -> Result<u64, AppError> {
    Ok(id)
}

fn main() {}
