use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

// The trap: every customer got the first customer's recorded charge.
#[idempotent(key = ())]
async fn charge(customer: u64, cents: u32) -> Result<u32, AppError> {
    let _ = customer;
    Ok(cents)
}

pub struct Account {
    pub id: u64,
}

impl Account {
    // `self` is an argument too: every account would share one outcome.
    #[idempotent(name = "Account::close", key = ())]
    async fn close(&self) -> Result<u64, AppError> {
        Ok(self.id)
    }
}

fn main() {}
