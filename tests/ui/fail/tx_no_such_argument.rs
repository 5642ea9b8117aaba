use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

#[idempotent(key = (id), tx = txn)]
async fn save(id: i64, tx: &mut sqlx::PgTransaction<'_>) -> Result<(), AppError> {
    let _ = (id, tx);
    Ok(())
}

fn main() {}
