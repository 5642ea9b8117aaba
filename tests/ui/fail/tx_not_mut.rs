use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

#[idempotent(key = (id), tx = pool)]
async fn save(id: i64, pool: &sqlx::PgPool) -> Result<(), AppError> {
    let _ = (id, pool);
    Ok(())
}

fn main() {}
