use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

pub struct HttpClient;

#[idempotent]
async fn fetch(url: &str, client: &HttpClient) -> Result<String, AppError> {
    let _ = client;
    Ok(url.to_owned())
}

fn main() {}
