use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

#[idempotent(key = (request_id, body), verify = (body))]
async fn submit(request_id: u64, body: String) -> Result<usize, AppError> {
    Ok(body.len() + request_id as usize)
}

fn main() {}
