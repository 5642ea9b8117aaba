use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

pub struct Pool;

#[idempotent(key = (pool, id))]
async fn save(pool: &Pool, id: u64) -> Result<u64, AppError> {
    let _ = pool;
    Ok(id)
}

fn main() {}
