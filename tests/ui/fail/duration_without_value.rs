//! A duration option without a value: the help names that option (`lease = "30s"`).
use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

#[idempotent(key = (id), lease)]
async fn charge(id: u64) -> Result<u64, AppError> {
    Ok(id)
}

fn main() {}
