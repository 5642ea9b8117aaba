//! A float under the default key: the message is a full sentence.
use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

#[idempotent]
async fn charge(order: u64, amount: f64) -> Result<u64, AppError> {
    Ok(order + amount as u64)
}

fn main() {}
