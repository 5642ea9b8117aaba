//! One-line bodies compile without warnings: the generated block around the body does not make
//! rustc suggest removing its braces (a fix that would not compile).
#![deny(warnings)]

use idem_runtime::{idempotent, Idem};

#[path = "../common.rs"]
mod common;
use common::AppError;

#[idempotent]
async fn literal(id: u64) -> Result<u64, AppError> {
    Ok(7)
}

#[idempotent]
async fn path(id: u64) -> Result<u64, AppError> {
    Ok(id)
}

#[idempotent(key = (id))]
async fn unit(id: u64) -> Result<(), AppError> {
    Ok(())
}

#[idempotent]
async fn one_line(id: u64) -> Result<u64, AppError> { Ok(id + 1) }

#[idempotent(key = (id))]
async fn one_line_unit(id: u64) -> Result<(), AppError> { Ok(()) }

const ANSWER: Result<u64, AppError> = Ok(42);

#[idempotent]
async fn constant(id: u64) -> Result<u64, AppError> {
    ANSWER
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(Idem::memory().scope(f)),
        Err(e) => panic!("{e}"),
    }
}

fn main() {
    let (a, b, c, d) = block_on(async {
        (literal(1).await, path(2).await, unit(3).await, constant(4).await)
    });
    assert_eq!(a.ok(), Some(7));
    assert_eq!(b.ok(), Some(2));
    assert!(c.is_ok());
    assert_eq!(d.ok(), Some(42));
    let (e, f) = block_on(async { (one_line(1).await, one_line_unit(2).await) });
    assert_eq!(e.ok(), Some(2));
    assert!(f.is_ok());
}
