//! A suffixed bare number: the suggestion is `"5s"`, not `"5u64s"`.
use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

#[idempotent(key = (id), ttl = 5u64)]
async fn charge(id: u64) -> Result<u64, AppError> {
    Ok(id)
}

fn main() {}
