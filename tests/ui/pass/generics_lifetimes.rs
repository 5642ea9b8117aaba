#![deny(warnings)]

use idem_runtime::{idempotent, Idem};

#[path = "../common.rs"]
mod common;
use common::AppError;

use serde::{de::DeserializeOwned, Serialize};

#[idempotent(key = (id, tags))]
async fn tagged<'a, T>(id: u64, tags: &'a [&'a str], make: impl Fn(u64) -> T) -> Result<T, AppError>
where
    T: Serialize + DeserializeOwned,
{
    let _ = tags;
    Ok(make(id))
}

#[idempotent(key = (key))]
async fn by_key<K: idem_runtime::IdemKey + Sync>(key: K) -> Result<u8, AppError> {
    let _ = &key;
    Ok(1)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(Idem::memory().scope(f)),
        Err(e) => panic!("{e}"),
    }
}

fn main() {
    let r = block_on(async { (tagged(3, &["x"], |i| i * 2).await.ok(), by_key("k").await.ok()) });
    assert_eq!(r, (Some(6), Some(1)));
}
