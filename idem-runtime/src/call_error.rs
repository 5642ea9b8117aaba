//! `CallError<E>`: the error of an idempotent call whose own error type cannot hold idem's
//! errors (`std::io::Error`, a foreign enum: the orphan rule forbids
//! `impl From<idem_runtime::Error> for std::io::Error`).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Either the body's own error or one of idem's. Returned by [`Idem::try_call`](crate::Idem::try_call),
/// and usable as the error type of an `#[idempotent]` function whose body's errors are of a type
/// that cannot carry [`Error`]:
///
/// ```
/// use idem_runtime::{idempotent, CallError, Idem};
///
/// #[idempotent(key = (path))]
/// async fn read_config(path: &str) -> Result<String, CallError<std::io::Error>> {
///     Ok(std::fs::read_to_string(path)?) // `?` turns the io::Error into CallError::Body
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let outcome = Idem::memory().scope(read_config("/no/such/file")).await;
/// assert!(matches!(outcome, Err(CallError::Body(e)) if e.kind() == std::io::ErrorKind::NotFound));
/// # }
/// ```
#[derive(Debug, Serialize, Deserialize)]
pub enum CallError<E> {
    /// The body's own error.
    Body(E),
    /// idem's error: the store failed, the key is in progress or reused, ...
    Idem(Error),
}

impl<E> CallError<E> {
    /// The body's error, if that is what this is.
    pub fn body(self) -> Option<E> {
        match self {
            CallError::Body(e) => Some(e),
            CallError::Idem(_) => None,
        }
    }

    /// idem's error, if that is what this is.
    pub fn idem(&self) -> Option<&Error> {
        match self {
            CallError::Body(_) => None,
            CallError::Idem(e) => Some(e),
        }
    }
}

/// So `?` on the body's own error type works inside an `#[idempotent]` function that returns
/// `Result<T, CallError<E>>`. (idem's errors become [`CallError::Idem`] inside the engine; there
/// is no `From<Error>`, which would overlap with this impl for `CallError<Error>`.)
impl<E> From<E> for CallError<E> {
    fn from(e: E) -> Self {
        CallError::Body(e)
    }
}

impl<E: fmt::Display> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Body(e) => e.fmt(f),
            CallError::Idem(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for CallError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Body(e) => Some(e),
            CallError::Idem(e) => Some(e),
        }
    }
}
