use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

#[idempotent(key = (id), tx = buf)]
async fn save(id: i64, buf: &mut Vec<u8>) -> Result<(), AppError> {
    buf.push(id as u8);
    Ok(())
}

fn main() {}
