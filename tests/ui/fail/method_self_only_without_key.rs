use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

pub struct Account {
    pub id: u64,
}

impl Account {
    // Without `key`, `self` is not part of the key: every account would share one outcome.
    #[idempotent(name = "Account::close")]
    async fn close(&self) -> Result<u64, AppError> {
        Ok(self.id)
    }
}

fn main() {}
