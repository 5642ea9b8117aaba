#![deny(warnings)]

use idem_runtime::{idempotent, Idem};

#[path = "../common.rs"]
mod common;
use common::AppError;

/// Runs once per `(title, lang)`.
#[idempotent(key = (title, lang))]
pub async fn generate(title: &str, lang: &str) -> Result<String, AppError> {
    Ok(format!("{title}/{lang}"))
}

#[idempotent]
async fn implicit(a: u32, b: String, c: Option<Vec<u8>>) -> Result<usize, AppError> {
    Ok(a as usize + b.len() + c.map_or(0, |v| v.len()))
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(Idem::memory().scope(f)),
        Err(e) => panic!("{e}"),
    }
}

fn main() {
    let (a, b) = block_on(async { (generate("t", "en").await, implicit(1, "ab".into(), None).await) });
    assert_eq!(a.ok().as_deref(), Some("t/en"));
    assert_eq!(b.ok(), Some(3));
}
