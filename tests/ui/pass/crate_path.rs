//! `crate = path` names `idem_runtime` under another name (a renamed dependency).
#![deny(warnings)]

extern crate idem_runtime as idem;

use idem::{idempotent, Idem};

#[path = "../common.rs"]
mod common;
use common::AppError;

#[idempotent(crate = idem, key = (id), ttl = std::time::Duration::from_secs(60))]
async fn charge(id: u64) -> Result<u64, AppError> {
    Ok(id * 2)
}

#[idempotent(crate = "idem", key = (id))]
async fn refund(id: u64) -> Result<u64, AppError> {
    Ok(id + 1)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(Idem::memory().scope(f)),
        Err(e) => panic!("{e}"),
    }
}

fn main() {
    let (a, b) = block_on(async { (charge(2).await, refund(2).await) });
    assert_eq!(a.ok(), Some(4));
    assert_eq!(b.ok(), Some(3));
}
