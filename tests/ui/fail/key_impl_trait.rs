use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

#[idempotent(key = (id, label))]
async fn build(id: u64, label: impl std::fmt::Display) -> Result<String, AppError> {
    Ok(format!("{id} {label}"))
}

fn main() {}
