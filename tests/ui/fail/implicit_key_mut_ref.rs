//! A `&mut` argument under the default key: an error at the argument, whose help lists the key
//! without it.
use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

#[idempotent]
async fn fill(id: u64, buf: &mut Vec<u8>) -> Result<usize, AppError> {
    buf.push(1);
    Ok(buf.len() + id as usize)
}

fn main() {}
