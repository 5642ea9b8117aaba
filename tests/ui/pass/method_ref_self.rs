#![deny(warnings)]

use idem_runtime::{idempotent, Idem};

#[path = "../common.rs"]
mod common;
use common::AppError;

pub struct Mailer {
    pub sent: std::sync::atomic::AtomicU32,
}

impl Mailer {
    #[idempotent(name = "Mailer::send", key = (to, subject))]
    pub async fn send(&self, to: &str, subject: &str) -> Result<u32, AppError> {
        Ok(self.sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + to.len() as u32 + subject.len() as u32)
    }

    #[idempotent(name = "Mailer::into_count")]
    pub async fn into_count(self, extra: u32) -> Result<u32, AppError> {
        Ok(self.sent.into_inner() + extra)
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(Idem::memory().scope(f)),
        Err(e) => panic!("{e}"),
    }
}

fn main() {
    let m = Mailer { sent: 0.into() };
    let n = block_on(async { (m.send("a", "b").await.ok(), m.send("a", "b").await.ok()) });
    assert_eq!(n, (Some(2), Some(2)));
    assert_eq!(block_on(m.into_count(1)).ok(), Some(2));
}
