use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

use std::collections::HashMap;

#[idempotent(key = (labels))]
async fn tag(labels: &HashMap<String, String>) -> Result<usize, AppError> {
    Ok(labels.len())
}

fn main() {}
