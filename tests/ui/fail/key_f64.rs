use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

#[idempotent(key = (order, amount))]
async fn charge(order: u64, amount: f64) -> Result<u64, AppError> {
    Ok(order + amount as u64)
}

fn main() {}
