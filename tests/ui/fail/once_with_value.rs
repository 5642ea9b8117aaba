use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

#[idempotent(once = true)]
async fn warm_up(region: &str) -> Result<u32, AppError> {
    Ok(region.len() as u32)
}

fn main() {}
