#![deny(warnings)]

use idem_runtime::{idempotent, Idem};

#[path = "../common.rs"]
mod common;
use common::AppError;

mod errors {
    pub type Result<T> = std::result::Result<T, super::AppError>;
}

#[idempotent(key = (n))]
async fn alias(n: u32) -> errors::Result<u32> {
    let parsed: u32 = "7".parse().map_err(|_| super_error())?;
    Ok(n + parsed)
}

fn super_error() -> AppError {
    AppError("parse".into())
}

#[idempotent(key = (n))]
async fn full_path(n: u32) -> std::result::Result<Vec<u32>, AppError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    Ok(vec![n])
}

#[idempotent(key = (n))]
async fn core_path(n: u32) -> ::core::result::Result<(), AppError> {
    let _ = n;
    Ok(())
}

/// An alias whose last segment is not `Result`: the compiler, not the name, decides.
type Res<T> = Result<T, AppError>;

#[idempotent(key = (n))]
async fn local_alias(n: u32) -> Res<u32> {
    Ok(n + 1)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(Idem::memory().scope(f)),
        Err(e) => panic!("{e}"),
    }
}

fn main() {
    let r = block_on(async { (alias(1).await.ok(), full_path(2).await.ok(), core_path(3).await.is_ok()) });
    assert_eq!(r, (Some(8), Some(vec![2]), true));
    assert_eq!(block_on(local_alias(4)).ok(), Some(5));
}
