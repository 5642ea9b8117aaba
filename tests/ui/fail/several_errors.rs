use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

#[idempotent(key = (ordr), ttl = "1 dia", retries = 3)]
async fn charge(order: u64) -> Result<u64, AppError> {
    Ok(order)
}

fn main() {}
