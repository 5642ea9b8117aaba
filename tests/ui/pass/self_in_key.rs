#![deny(warnings)]

use idem_runtime::{idempotent, Idem};

#[path = "../common.rs"]
mod common;
use common::AppError;

use idem_runtime::IdemKey;

#[derive(IdemKey)]
pub struct Tenant {
    pub id: u64,
    pub region: String,
}

impl Tenant {
    #[idempotent(name = "Tenant::provision", key = (self, plan))]
    pub async fn provision(&self, plan: &str) -> Result<String, AppError> {
        Ok(format!("{}-{}-{plan}", self.id, self.region))
    }

    #[idempotent(name = "Tenant::rename", key = (self.id))]
    pub async fn rename(&mut self, to: String) -> Result<(), AppError> {
        self.region = to;
        Ok(())
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(Idem::memory().scope(f)),
        Err(e) => panic!("{e}"),
    }
}

fn main() {
    let mut t = Tenant { id: 1, region: "eu".into() };
    assert_eq!(block_on(t.provision("pro")).ok().as_deref(), Some("1-eu-pro"));
    assert!(block_on(t.rename("us".into())).is_ok());
}
