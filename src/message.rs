//! A message as the outputs write it and a chat template sees it (OpenAI's
//! chat shape). The formatters build these from the model's messages; the
//! token counter renders them. Field order is the output order.

use serde::Serialize;
use serde_json::Value;

/// A system prompt folded into the first user turn, as templates without
/// a system role do it themselves (Gemma's).
pub fn fold_into(system: &str, user: &str) -> String {
    format!("{system}\n\n{user}")
}

/// `messages` with `system` folded into the first user message.
pub fn folded(system: &str, messages: &[OutMsg]) -> Vec<OutMsg> {
    let mut out = messages.to_vec();
    if let Some(m) = out.iter_mut().find(|m| m.role == "user") {
        m.content = Some(fold_into(system, m.content.as_deref().unwrap_or_default()));
    }
    out
}

/// One message as written. Field order is the output order.
#[derive(Debug, Clone, Serialize)]
pub struct OutMsg {
    pub role: &'static str,
    /// `null` only on tool-call turns of the OpenAI flavour.
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<OutCall>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: OutFunction,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutFunction {
    pub name: String,
    /// A JSON object, or its text for `--target openai`.
    pub arguments: Value,
}

impl OutMsg {
    pub fn text(role: &'static str, content: impl Into<String>) -> OutMsg {
        OutMsg {
            role,
            content: Some(content.into()),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
            reasoning_content: None,
        }
    }
}
