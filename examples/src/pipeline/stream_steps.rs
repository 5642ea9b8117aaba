//! The streamed draft step, written plain and made idempotent with `#[idempotent(stream)]`:
//! the part to copy for a streaming LLM call. The rest of `--stream` is the harness around it.

use futures_util::StreamExt;
use idem_runtime::{idempotent, Idem, Streamed};

use super::steps::StepError;
use super::stream_client::{StreamClient, Token};

/// Asks the model for a draft and hands back its tokens as they arrive. Every stream started is
/// billed, read to the end or not.
pub(crate) async fn stream_draft_body(
    llm: &StreamClient,
    prompt: &str,
    user: &str,
) -> Result<Streamed<Token, StepError>, StepError> {
    let tokens = llm.stream(prompt, user).await.map_err(StepError)?;
    Ok(Streamed::new(tokens.map(|t| t.map_err(StepError))))
}

// The same step, once per prompt of the batch. The caller still reads tokens as the model
// writes them; idem journals them on the side. A duplicate request made while the draft is being
// written follows that stream live instead of paying for a second one, a later one replays the
// journal, and a retry after a stream that broke off generates it again. `user` says who asks,
// not what: it is not part of the key.
#[idempotent(
    key = (batch, prompt),
    name = "ai_pipeline::stream_draft",
    stream,
    store = idem
)]
pub(crate) async fn stream_draft(
    idem: &Idem,
    batch: &str,
    prompt: &str,
    llm: &StreamClient,
    user: &str,
) -> Result<Streamed<Token, StepError>, StepError> {
    stream_draft_body(llm, prompt, user).await
}
