//! The agent's use of idem's cost ledger: a model turn reports the tokens it billed, replays
//! count them as avoided, and the report reads "avoided" from the ledger (not on the side).

use idem_runtime::{current, Error, Idem};

/// The operation whose costs the report reads (the model-turn step's name).
pub(crate) const MODEL_TURN_OP: &str = "agent::model_turn";

/// Reports `tokens` billed by this attempt of the running step (nothing outside a step).
pub(crate) fn spent_tokens(tokens: u64) {
    if let Some(call) = current() {
        call.add_cost("tokens", tokens as f64);
    }
}

/// Writes this process's avoided counts to the store.
pub(crate) async fn flush(idem: &Idem) -> Result<(), Error> {
    idem.flush_costs().await
}

/// Tokens the model-turn step avoided by replaying, all time, by the store's ledger.
pub(crate) async fn avoided_tokens(idem: &Idem) -> Result<f64, Error> {
    Ok(idem
        .costs(Some(MODEL_TURN_OP))
        .await?
        .iter()
        .filter(|line| line.unit == "tokens")
        .map(|line| line.avoided)
        .sum())
}
