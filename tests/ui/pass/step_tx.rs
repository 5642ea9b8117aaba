#![deny(warnings)]

use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

fn db(e: sqlx::Error) -> AppError {
    AppError(e.to_string())
}

/// A step in the caller's SQLite transaction: the claim, the insert and the snapshot commit
/// with the caller's other writes.
#[idempotent(key = (order_id), tx = tx)]
async fn save_order(order_id: i64, tx: &mut sqlx::SqliteTransaction<'_>) -> Result<i64, AppError> {
    let done = sqlx::query("INSERT INTO orders (id) VALUES (?)")
        .bind(order_id)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(done.last_insert_rowid())
}

/// The same on PostgreSQL, with the default key (the transaction is never part of it).
#[idempotent(tx = conn)]
async fn save_invoice(invoice: String, conn: &mut sqlx::PgTransaction<'_>) -> Result<u64, AppError> {
    let done = sqlx::query("INSERT INTO invoices (id) VALUES ($1)")
        .bind(&invoice)
        .execute(&mut **conn)
        .await
        .map_err(db)?;
    Ok(done.rows_affected())
}

/// On a bare connection, with its own store handle.
#[idempotent(key = (id), tx = conn, store = idem)]
async fn mark_sent(
    idem: &idem_runtime::Idem,
    id: i64,
    conn: &mut sqlx::PgConnection,
) -> Result<(), AppError> {
    sqlx::query("UPDATE invoices SET sent = true WHERE n = $1")
        .bind(id)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
}

fn main() {
    let _ = save_order;
    let _ = save_invoice;
    let _ = mark_sent;
}
