#![deny(warnings)]

use idem_runtime::{idempotent, Idem};

#[path = "../common.rs"]
mod common;
use common::AppError;

use std::time::Duration;

const WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Declined(String);

impl From<idem_runtime::Error> for Declined {
    fn from(e: idem_runtime::Error) -> Self {
        Declined(e.to_string())
    }
}

impl std::fmt::Display for Declined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub struct Request {
    pub id: String,
    pub body: (u32, String),
}

#[idempotent(
    key = (req.id),
    name = "payments::charge",
    version = 2,
    verify = (req.body.0, req.body.1),
    ttl = "1d12h",
    lease = "1m30s",
    on_conflict = error,
    wait = WAIT,
    cache_errors,
    store = idem,
    heartbeat = false,
)]
async fn charge(idem: &Idem, req: &Request) -> Result<u32, Declined> {
    if req.body.0 == 0 {
        return Err(Declined("zero".into()));
    }
    Ok(req.body.0)
}

#[idempotent(key = (n), lease = Duration::from_millis(500), ttl = "250ms", wait = "0s", on_conflict = wait, heartbeat = true)]
async fn short(n: u8) -> Result<u8, AppError> {
    Ok(n)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(Idem::memory().scope(f)),
        Err(e) => panic!("{e}"),
    }
}

fn main() {
    let idem = Idem::memory();
    let req = Request { id: "r1".into(), body: (5, "x".into()) };
    assert_eq!(block_on(charge(&idem, &req)).ok(), Some(5));
    assert_eq!(block_on(short(1)).ok(), Some(1));
}
