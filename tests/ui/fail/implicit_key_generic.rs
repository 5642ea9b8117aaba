//! A type parameter and an `impl Trait` argument under the default key: the suggested bound is
//! the public `IdemKey`, not a private helper trait.
use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

#[idempotent]
async fn tag<T: std::fmt::Display>(id: u64, value: T) -> Result<String, AppError> {
    Ok(format!("{id} {value}"))
}

#[idempotent]
async fn label(id: u64, value: impl std::fmt::Display) -> Result<String, AppError> {
    Ok(format!("{id} {value}"))
}

fn main() {}
