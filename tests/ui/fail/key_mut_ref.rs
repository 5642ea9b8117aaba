use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

#[idempotent(key = (buffer))]
async fn fill(buffer: &mut Vec<u8>) -> Result<usize, AppError> {
    buffer.push(1);
    Ok(buffer.len())
}

fn main() {}
