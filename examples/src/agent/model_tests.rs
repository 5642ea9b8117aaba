//! The fake model's policy: deterministic, asks for the planned tool calls, then answers.

use serde_json::json;

use super::messages::Message;
use super::model::{next_turn, task, tokens};

#[test]
fn the_same_conversation_gets_the_same_turn_and_the_plan_ends_in_an_answer() {
    let mut messages = vec![Message::text("user", task("leases", 4))];
    let mut calls = 0;
    for _ in 0..10 {
        let turn = next_turn(&messages);
        assert_eq!(turn, next_turn(&messages));
        assert!(tokens(&messages, &turn) > 0);
        let asked = turn.tool_calls.clone();
        messages.push(turn);
        if asked.is_empty() {
            break;
        }
        for call in asked {
            calls += 1;
            let result = match call.name.as_str() {
                "search" => json!({ "hits": ["Leases explained"] }),
                "write_row" => json!({ "row": 7 }),
                _ => json!({ "notification_id": "ntf-1" }),
            };
            messages.push(Message::tool_result(&call, &result));
        }
    }
    assert_eq!(calls, 4);
    let last = messages
        .last()
        .map(|m| m.content.clone())
        .unwrap_or_default();
    assert!(last.contains("saved rows [7]"), "{last}");
    assert!(last.contains("\"ntf-1\""), "{last}");
    // The notification names the row the write returned.
    let notify = messages
        .iter()
        .flat_map(|m| m.tool_calls.iter())
        .find(|c| c.name == "notify")
        .map(|c| c.arguments["text"].clone());
    assert_eq!(notify, Some(json!("saved row 7: Leases explained")));
}
