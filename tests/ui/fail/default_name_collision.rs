use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

// Both default to the operation name `<crate>::charge`, so they would share one key space.
mod cards {
    use super::*;

    #[idempotent(key = (order))]
    pub async fn charge(order: u64) -> Result<u64, AppError> {
        Ok(order)
    }
}

mod invoices {
    use super::*;

    #[idempotent(key = (invoice))]
    pub async fn charge(invoice: u64) -> Result<u64, AppError> {
        Ok(invoice)
    }
}

fn main() {
    // A fn in a fn body takes part too.
    #[idempotent(key = (n))]
    async fn refund(n: u64) -> Result<u64, AppError> {
        Ok(n)
    }

    mod refunds {
        use super::*;

        #[idempotent(key = (n))]
        pub async fn refund(n: u64) -> Result<u64, AppError> {
            Ok(n)
        }
    }

    let _ = (cards::charge(1), invoices::charge(2), refund(3), refunds::refund(4));
}
