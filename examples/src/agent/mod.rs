//! The agent example (`agent` binary): an agent loop against a local model whose answers ask for
//! tool calls (a search, a row write, a notification). Each model turn and each tool call is an
//! idempotent step of one agent run, keyed by the run and its position (`key = parent`), because
//! tool-call arguments are model JSON. A supervisor kills the agent process at seeded points and
//! restarts it; the run resumes where it stopped and every tool effect happens once.

pub(crate) mod app_db;
pub(crate) mod args;
pub(crate) mod child;
pub(crate) mod client;
pub(crate) mod crash;
pub(crate) mod invocation;
pub(crate) mod ledger;
pub(crate) mod messages;
pub(crate) mod model;
pub(crate) mod report;
pub(crate) mod run;
pub(crate) mod services;
pub(crate) mod steps;
pub(crate) mod supervise;

#[cfg(test)]
mod model_tests;
