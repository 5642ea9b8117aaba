//! On a trait method declaration: the error is at the signature and says where the attribute
//! goes.
use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

pub trait Charger {
    #[idempotent(name = "Charger::charge", key = (id))]
    async fn charge(&self, id: u64) -> Result<u64, AppError>;
}

fn main() {}
