//! A type named `Result` that is not `std::result::Result` is rejected by the compiler's
//! `ReturnsResult` check, not accepted for its name.
use idem_runtime::idempotent;

pub struct Result<T>(pub T);

#[idempotent(key = (id))]
async fn lookup(id: u64) -> Result<u64> {
    Result(id)
}

fn main() {}
