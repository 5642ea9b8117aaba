use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

#[derive(serde::Serialize)]
pub struct Draft {
    pub text: String,
}

#[idempotent(key = (id))]
async fn draft(id: u64) -> Result<Draft, AppError> {
    Ok(Draft { text: id.to_string() })
}

fn main() {}
