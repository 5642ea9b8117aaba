//! idem: make side-effecting async steps idempotent.
//!
//! A call claims its key in a durable [`Store`], runs its body once, records the result as a
//! snapshot, and hands that snapshot to every retry, duplicate message, second worker or
//! restarted process. Crashed workers are taken over after one lease; a late ("zombie") attempt
//! can never overwrite the recorded outcome (its completion is fenced by the attempt number).
//!
//! ```
//! use idem_runtime::{Call, Error, Idem};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
//! let dir = tempfile::tempdir().map_err(|e| Error::Config(e.to_string()))?;
//! let url = format!("sqlite://{}", dir.path().join("idem.db").display());
//! let idem = Idem::open(&url).await?;
//!
//! let call = || Call::new("send_welcome_email").key(&("user-17", "welcome"));
//! let first: String = idem.call(call(), || async { Ok::<_, Error>("sent #1".to_string()) }).await?;
//! let again: String = idem.call(call(), || async { Ok::<_, Error>("sent #2".to_string()) }).await?;
//! assert_eq!(first, "sent #1");
//! assert_eq!(again, "sent #1"); // replayed, not sent twice
//! # Ok(()) }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

mod attempt;
mod cache;
mod call;
mod call_error;
mod context;
mod error;
mod execute;
mod handle;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
mod idem;
pub mod key;
mod lease;
mod ledger;
mod macro_support;
pub mod metrics;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub mod outbox;
pub mod queue;
pub mod record;
mod replay;
mod scope;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod step;
pub mod store;
mod stream;
mod wait;
mod waiters;

pub use crate::call::{Call, OnConflict, Options};
pub use crate::call_error::CallError;
pub use crate::context::{current, CallInfo};
pub use crate::error::{BoxError, Error};
pub use crate::idem::{Idem, IdemBuilder};
pub use crate::key::{Fingerprint, IdemKey, Key, KeyBuilder, KeyWriter};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub use crate::step::{StepClaim, StepConnection, StepStart};
pub use crate::store::Store;
pub use crate::stream::{StreamOptions, StreamSummary, Streamed};

#[cfg(feature = "macros")]
pub use idem_macros::{idempotent, IdemKey};

#[doc(hidden)]
pub mod __private {
    //! What macro expansions name. Not a public API: it changes without notice.
    pub use crate::call::{Call, OnConflict};
    pub use crate::error::Error;
    pub use crate::idem::Idem;
    pub use crate::key::{IdemKey, KeyWriter};
    pub use crate::macro_support::*;
    pub use crate::scope::resolve;
}

/// The README's examples, compiled and run as doctests so the README never lies.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
