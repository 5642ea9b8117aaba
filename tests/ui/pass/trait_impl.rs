#![deny(warnings)]

use idem_runtime::{idempotent, Idem};

#[path = "../common.rs"]
mod common;
use common::AppError;

trait Step {
    fn run(&self, input: u32) -> impl std::future::Future<Output = Result<u32, AppError>> + Send;
    async fn label(&self, n: u8) -> Result<String, AppError>;
}

struct Double;

impl Step for Double {
    #[idempotent(name = "Double::run", key = (input))]
    async fn run(&self, input: u32) -> Result<u32, AppError> {
        Ok(input * 2)
    }

    #[idempotent(name = "Double::label")]
    async fn label(&self, n: u8) -> Result<String, AppError> {
        Ok(n.to_string())
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(Idem::memory().scope(f)),
        Err(e) => panic!("{e}"),
    }
}

fn main() {
    let r = block_on(async { (Double.run(2).await.ok(), Double.label(7).await.ok()) });
    assert_eq!(r, (Some(4), Some("7".to_owned())));
}
