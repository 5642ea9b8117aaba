#![deny(warnings)]

use idem_runtime::{idempotent, Idem};

#[path = "../common.rs"]
mod common;
use common::AppError;

/// A doc comment.
///
/// More docs.
#[idempotent(key = (n))]
#[must_use = "the result says whether it ran"]
async fn documented(n: u32) -> Result<u32, AppError> {
    //! An inner doc comment.
    #![allow(clippy::identity_op)]
    let unused_but_allowed = n * 1;
    Ok(unused_but_allowed)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(Idem::memory().scope(f)),
        Err(e) => panic!("{e}"),
    }
}

fn main() {
    assert_eq!(block_on(documented(4)).ok(), Some(4));
}
