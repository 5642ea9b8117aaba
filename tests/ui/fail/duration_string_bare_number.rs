//! A duration string without a unit is an error that says to add one.
use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

#[idempotent(key = (id), ttl = "30")]
async fn charge(id: u64) -> Result<u64, AppError> {
    Ok(id)
}

fn main() {}
