//! A `#[cfg]` argument under the default key: the key would name an argument that may not
//! exist, so an explicit `key = (...)` is asked for.
use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

#[idempotent]
async fn charge(id: u64, #[cfg(any())] trace: u64) -> Result<u64, AppError> {
    Ok(id)
}

fn main() {}
