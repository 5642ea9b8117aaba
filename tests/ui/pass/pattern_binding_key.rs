//! `key = (...)` may name a value bound inside a pattern argument.
#![deny(warnings)]

use idem_runtime::{idempotent, Idem};

#[path = "../common.rs"]
mod common;
use common::AppError;

pub struct Point {
    pub x: u32,
    pub y: u32,
}

#[idempotent(key = (a))]
async fn first((a, b): (u32, u32)) -> Result<u32, AppError> {
    Ok(a + b)
}

#[idempotent(key = (x, y))]
async fn point(Point { x, y }: Point) -> Result<u32, AppError> {
    Ok(x * y)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(Idem::memory().scope(f)),
        Err(e) => panic!("{e}"),
    }
}

fn main() {
    let (a, b, c) = block_on(async {
        (first((1, 2)).await, first((1, 5)).await, point(Point { x: 2, y: 3 }).await)
    });
    // Keyed on `a` alone: the second call replays the first.
    assert_eq!(a.ok(), Some(3));
    assert_eq!(b.ok(), Some(3));
    assert_eq!(c.ok(), Some(6));
}
