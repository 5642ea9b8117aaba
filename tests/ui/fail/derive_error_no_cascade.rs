//! A failed derive shows only its own error: the type still implements `IdemKey`, so using it
//! as a key part adds nothing.
use idem_runtime::{idempotent, IdemKey};

#[path = "../common.rs"]
mod common;
use common::AppError;

#[derive(IdemKey)]
pub struct Request {
    #[idem(skipp)]
    id: u64,
}

#[idempotent(key = (req))]
async fn handle(req: Request) -> Result<u64, AppError> {
    Ok(req.id)
}

fn main() {}
