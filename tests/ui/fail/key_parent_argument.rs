use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

// `parent` is both the keyword of `key = parent` and an argument: ambiguous, so refused.
#[idempotent(key = parent)]
async fn reply(parent: u64, text: String) -> Result<usize, AppError> {
    Ok(text.len() + parent as usize)
}

fn main() {}
