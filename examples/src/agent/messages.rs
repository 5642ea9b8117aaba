//! The chat format the model server and the agent share: messages, tool calls, and a turn's
//! answer with the tokens it billed.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub(crate) role: String,
    /// The text.
    pub(crate) content: String,
    /// The tools an assistant message asks for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) tool_calls: Vec<ToolCall>,
    /// Which tool call a `tool` message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tool_call_id: Option<String>,
}

impl Message {
    /// A message with no tool calls.
    pub(crate) fn text(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.to_owned(),
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// A tool's result, answering `call`.
    pub(crate) fn tool_result(call: &ToolCall, result: &Value) -> Self {
        Self {
            role: "tool".to_owned(),
            content: result.to_string(),
            tool_calls: Vec::new(),
            tool_call_id: Some(call.id.clone()),
        }
    }
}

/// A tool call as a model writes it: arguments are free-form JSON (floats, maps), which is why
/// the steps that run them are keyed by position, not by their arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ToolCall {
    /// The model's id for the call (`call_3`): the services count effects by it, so a
    /// duplicate effect is visible.
    pub(crate) id: String,
    /// `search`, `write_row` or `notify`.
    pub(crate) name: String,
    /// The arguments.
    pub(crate) arguments: Value,
}

/// `POST /v1/chat` request body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChatRequest {
    /// The conversation so far.
    pub(crate) messages: Vec<Message>,
}

/// `POST /v1/chat` response body: the next assistant message and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Turn {
    /// The assistant's message (tool calls, or the final answer).
    pub(crate) message: Message,
    /// Tokens billed for this turn (prompt and completion).
    pub(crate) tokens: u64,
}
