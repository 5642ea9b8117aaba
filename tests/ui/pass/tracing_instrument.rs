#![deny(warnings)]

use idem_runtime::{idempotent, Idem};

#[path = "../common.rs"]
mod common;
use common::AppError;

#[tracing::instrument(skip(client), err)]
#[idempotent(key = (id))]
async fn outer(id: u32, client: &str) -> Result<u32, AppError> {
    let _ = client;
    Ok(id)
}

#[idempotent(key = (id))]
#[tracing::instrument(level = "debug")]
async fn inner(id: u32) -> Result<u32, AppError> {
    Ok(id + 1)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(Idem::memory().scope(f)),
        Err(e) => panic!("{e}"),
    }
}

fn main() {
    assert_eq!(block_on(async { (outer(1, "c").await.ok(), inner(1).await.ok()) }), (Some(1), Some(2)));
}
