use idem_runtime::idempotent;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, thiserror::Error)]
enum PayError {
    #[error("declined")]
    Declined,
    #[error(transparent)]
    Idem(#[from] idem_runtime::Error),
}

#[idempotent(key = (order), cache_errors = 5)]
async fn pay(order: u32) -> Result<u32, PayError> {
    Ok(order)
}

fn main() {}
