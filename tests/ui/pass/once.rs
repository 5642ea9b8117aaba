#![deny(warnings)]

use idem_runtime::{idempotent, Idem};

#[path = "../common.rs"]
mod common;
use common::AppError;

/// One outcome for every call, whatever the arguments.
#[idempotent(once)]
async fn warm_up(region: &str) -> Result<String, AppError> {
    Ok(region.to_owned())
}

/// `once` with a payload check: a later call with another region is `Error::KeyReuse`.
#[idempotent(once, verify = (region))]
async fn migrate(region: &str) -> Result<String, AppError> {
    Ok(region.to_owned())
}

/// No arguments: `key = ()` loses nothing and stays allowed.
#[idempotent(key = ())]
async fn seed() -> Result<u8, AppError> {
    Ok(1)
}

pub struct Cache;

impl Cache {
    #[idempotent(name = "Cache::refresh", once)]
    pub async fn refresh(&self) -> Result<u8, AppError> {
        Ok(2)
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(Idem::memory().scope(f)),
        Err(e) => panic!("{e}"),
    }
}

fn main() {
    let r = block_on(async {
        (
            warm_up("eu").await.ok(),
            warm_up("us").await.ok(),
            migrate("eu").await.ok(),
            migrate("us").await.is_err(),
            seed().await.ok(),
            Cache.refresh().await.ok(),
        )
    });
    let eu = Some("eu".to_owned());
    assert_eq!(r, (eu.clone(), eu.clone(), eu, true, Some(1), Some(2)));
}
