#![deny(warnings)]

use idem_runtime::{idempotent, Idem};

#[path = "../common.rs"]
mod common;
use common::AppError;

fn op() -> String {
    idem_runtime::current().map(|i| i.op.to_string()).unwrap_or_default()
}

// Default names are `<crate>::<fn>`: fns with different names, wherever they live, are fine.
mod a {
    pub mod b {
        use crate::{idempotent, op, AppError};

        #[idempotent(key = (n))]
        pub async fn deep(n: u8) -> Result<String, AppError> {
            let _ = n;
            Ok(op())
        }
    }
}

// Only one of two same-named fns is compiled: no conflict, whichever way the cfg is written.
#[cfg(any())]
#[idempotent(key = (n))]
async fn platform(n: u8) -> Result<String, AppError> {
    let _ = n;
    Ok(String::new())
}

#[idempotent(key = (n))]
#[cfg(any())]
async fn platform(n: u8) -> Result<String, AppError> {
    let _ = n;
    Ok(String::new())
}

#[idempotent(key = (n))]
async fn platform(n: u8) -> Result<String, AppError> {
    let _ = n;
    Ok(op())
}

pub struct Factory;

impl Factory {
    // An associated fn without `self` keeps the default name too.
    #[idempotent(key = (n))]
    pub async fn build(n: u8) -> Result<String, AppError> {
        let _ = n;
        Ok(op())
    }
}

// A raw identifier: the name is `match`.
#[idempotent(key = (n))]
async fn r#match(n: u8) -> Result<String, AppError> {
    let _ = n;
    Ok(op())
}

// Generic: a type and a const parameter.
#[idempotent(key = (n))]
async fn sized<T, const N: usize>(n: u8) -> Result<usize, AppError> {
    Ok(usize::from(n) + std::mem::size_of::<T>() * N)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(Idem::memory().scope(f)),
        Err(e) => panic!("{e}"),
    }
}

fn main() {
    // In a fn body.
    #[idempotent(key = (n))]
    async fn local(n: u8) -> Result<String, AppError> {
        let _ = n;
        Ok(op())
    }

    let r = block_on(async {
        (
            a::b::deep(1).await.ok(),
            platform(1).await.ok(),
            Factory::build(1).await.ok(),
            r#match(1).await.ok(),
            local(1).await.ok(),
            sized::<u32, 2>(1).await.ok(),
        )
    });
    let name = |f: &str| Some(format!("{}::{f}", env!("CARGO_CRATE_NAME")));
    assert_eq!(
        r,
        (name("deep"), name("platform"), name("build"), name("match"), name("local"), Some(9))
    );
}
