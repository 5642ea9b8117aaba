//! The fake model's policy: a pure function from the conversation to the next assistant
//! message, so the same conversation always gets the same next turn (an uncrashed run and a
//! crashed-and-restarted one end with the same answer when their tool results are the same).
//! The task in the first user message says how many tool calls to make; the model asks for
//! them one or two per turn, cycling search -> write_row -> notify, and builds each call's
//! arguments from earlier results (the row a notification names is the one the write
//! returned). Then it answers, quoting the ids it saw and a digest of every tool result.

use serde_json::{json, Value};

use super::messages::{Message, ToolCall};

/// The first user message: what the agent is asked to do.
pub(crate) fn task(topic: &str, tool_calls: u64) -> String {
    format!("task: research {topic}; tool calls: {tool_calls}")
}

/// The topic and number of tool calls of a task (from the first user message).
fn parse_task(messages: &[Message]) -> (String, u64) {
    let task = messages
        .iter()
        .find(|m| m.role == "user")
        .map(|m| m.content.as_str())
        .unwrap_or_default();
    let rest = task.strip_prefix("task: research ").unwrap_or(task);
    match rest.rsplit_once("; tool calls: ") {
        Some((topic, n)) => (topic.to_owned(), n.trim().parse().unwrap_or(0)),
        None => (rest.to_owned(), 0),
    }
}

/// The tool results so far, as JSON.
fn results(messages: &[Message]) -> impl Iterator<Item = Value> + '_ {
    messages
        .iter()
        .filter(|m| m.role == "tool")
        .map(|m| serde_json::from_str(&m.content).unwrap_or(Value::Null))
}

/// The next assistant message.
pub(crate) fn next_turn(messages: &[Message]) -> Message {
    let (topic, planned) = parse_task(messages);
    let done = messages.iter().filter(|m| m.role == "tool").count() as u64;
    if done >= planned {
        return Message::text("assistant", final_answer(&topic, messages));
    }
    // One call a turn, except that a notification goes out with the next search: so every
    // write is answered before the notification that names its row is written.
    let batch = if done % 3 == 2 { 2 } else { 1 }.min(planned - done);
    let last_hit = results(messages)
        .filter_map(|r| r["hits"][0].as_str().map(str::to_owned))
        .last()
        .unwrap_or_else(|| topic.clone());
    let last_row = results(messages).filter_map(|r| r["row"].as_i64()).last();
    let tool_calls = (done..done + batch)
        .map(|i| {
            let (name, arguments) = match i % 3 {
                0 => (
                    "search",
                    json!({ "query": format!("{topic} #{i}"), "top_k": 3 }),
                ),
                1 => (
                    "write_row",
                    json!({
                        "title": last_hit,
                        "score": 0.25 + i as f64 / 8.0,
                        "tags": { "topic": topic, "call": i },
                    }),
                ),
                _ => (
                    "notify",
                    json!({
                        "to": "owner@example.com",
                        "text": match last_row {
                            Some(row) => format!("saved row {row}: {last_hit}"),
                            None => format!("nothing saved yet about {last_hit}"),
                        },
                    }),
                ),
            };
            ToolCall {
                id: format!("call_{i}"),
                name: name.to_owned(),
                arguments,
            }
        })
        .collect::<Vec<_>>();
    Message {
        role: "assistant".to_owned(),
        content: format!("Calling {} tool(s).", tool_calls.len()),
        tool_calls,
        tool_call_id: None,
    }
}

/// The answer once every planned tool call has a result: the rows and notifications it made
/// (as the tools numbered them) and a digest of all results.
fn final_answer(topic: &str, messages: &[Message]) -> String {
    let rows: Vec<i64> = results(messages)
        .filter_map(|r| r["row"].as_i64())
        .collect();
    let notes: Vec<String> = results(messages)
        .filter_map(|r| r["notification_id"].as_str().map(str::to_owned))
        .collect();
    let mut digest = blake3::Hasher::new();
    for m in messages.iter().filter(|m| m.role == "tool") {
        digest.update(m.content.as_bytes());
    }
    let digest = digest.finalize().to_hex();
    format!(
        "Researched {topic}: saved rows {rows:?}, sent notifications {notes:?}, evidence {}.",
        &digest.as_str()[..16]
    )
}

/// Tokens billed for a turn: the prompt (every message, about four characters a token) and
/// the completion.
pub(crate) fn tokens(messages: &[Message], answer: &Message) -> u64 {
    let chars =
        |m: &Message| m.content.len() + serde_json::to_string(&m.tool_calls).map_or(0, |s| s.len());
    let prompt: usize = messages.iter().map(chars).sum();
    (prompt / 4 + chars(answer) / 4 + 16) as u64
}
