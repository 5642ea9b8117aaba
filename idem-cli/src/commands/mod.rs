//! One module per command: each reads its arguments, asks the store and prints the answer.

pub(crate) mod forget;
pub(crate) mod list;
pub(crate) mod purge;
pub(crate) mod release;
pub(crate) mod show;
pub(crate) mod stats;
pub(crate) mod tree;
