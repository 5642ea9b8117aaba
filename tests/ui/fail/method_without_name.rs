use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

pub struct Mailer;

impl Mailer {
    #[idempotent(key = (to))]
    async fn send(&self, to: &str) -> Result<(), AppError> {
        let _ = to;
        Ok(())
    }
}

fn main() {}
