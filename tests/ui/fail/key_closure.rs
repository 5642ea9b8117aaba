use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

#[idempotent(key = (id, make))]
async fn build<F: Fn() -> u32>(id: u64, make: F) -> Result<u32, AppError> {
    Ok(make() + id as u32)
}

fn main() {}
