//! Reader for `response_store.db` (Responses API objects).
//!
//! Each row holds a whole cumulative `conversation_history`, so a chain of
//! N calls stores N growing copies, and Hermes records every new user input
//! twice. The store is small (an LRU of 100 bodies) and is read whole. It
//! serves two purposes: the Responses `instructions` of sessions that
//! state.db also holds (state.db never stores them), and whole
//! conversations from early API-server versions that did not write
//! state.db at all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde_json::Value;

use crate::model::{Message, Origin, Role, Session, SessionMeta};
use crate::source::json_message;

#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub response_id: String,
    pub created_at: Option<f64>,
    pub session_id: Option<String>,
    pub instructions: Option<String>,
    pub history: Vec<Message>,
}

#[derive(Debug)]
pub struct ResponseStore {
    pub path: PathBuf,
    pub responses: Vec<StoredResponse>,
}

impl ResponseStore {
    /// Reads every response body, skipping `idem:` idempotency rows. A
    /// body that is not valid JSON goes to `on_problem`.
    pub fn open(
        path: &Path,
        on_problem: &mut dyn FnMut(String) -> Result<()>,
    ) -> Result<ResponseStore> {
        let conn = super::sqlite::open_read_only(path)?;
        let has_table: bool = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'responses'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            > 0;
        if !has_table {
            bail!(
                "{}: not a Hermes response_store.db (no responses table)",
                path.display()
            );
        }
        let mut stmt = conn.prepare(
            "SELECT response_id, data FROM responses WHERE response_id NOT LIKE 'idem:%' ORDER BY response_id",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut responses = Vec::new();
        for row in rows {
            let (id, data) = row?;
            match parse_body(&id, &data) {
                Ok(resp) => responses.push(resp),
                Err(why) => on_problem(format!("{}: response {id}: {why}", path.display()))?,
            }
        }
        Ok(ResponseStore {
            path: path.to_path_buf(),
            responses,
        })
    }

    /// The Responses `instructions` a session last ran with.
    pub fn instructions_for(&self, session_id: &str) -> Option<&str> {
        self.responses
            .iter()
            .filter(|r| r.session_id.as_deref() == Some(session_id))
            .filter(|r| {
                r.instructions
                    .as_deref()
                    .is_some_and(|s| !s.trim().is_empty())
            })
            .max_by(|a, b| {
                a.created_at
                    .partial_cmp(&b.created_at)
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            .and_then(|r| r.instructions.as_deref())
    }

    /// Conversations of the sessions for which `known` is false (e.g. not in
    /// state.db). A chain is grouped by its `session_id` (or, in versions
    /// without it, by its first user turn) and rebuilt from its longest
    /// history, with Hermes's duplicated user inputs collapsed.
    pub fn sessions(&self, known: &dyn Fn(&str) -> bool) -> Vec<Session> {
        // A chain without a session id is named after its group key, not its
        // newest response: the leaf changes with every call, and coverage
        // of incremental runs is kept by session id.
        let mut groups: BTreeMap<String, &StoredResponse> = BTreeMap::new();
        for resp in &self.responses {
            let key = match &resp.session_id {
                Some(id) => id.clone(),
                None => match resp.history.iter().find(|m| m.role == Role::User) {
                    Some(first) => format!("resp-chain:{}", first.content),
                    None => resp.response_id.clone(),
                },
            };
            if resp.session_id.as_deref().is_some_and(known) {
                continue;
            }
            let better = match groups.get(&key) {
                Some(cur) => {
                    (resp.history.len(), resp.created_at.unwrap_or(0.0))
                        > (cur.history.len(), cur.created_at.unwrap_or(0.0))
                }
                None => true,
            };
            if better {
                groups.insert(key, resp);
            }
        }
        let mut out: Vec<Session> = groups
            .into_iter()
            .map(|(key, leaf)| {
                let id = match &leaf.session_id {
                    Some(id) => id.clone(),
                    None if key.starts_with("resp-chain:") => {
                        format!("resp-chain-{:016x}", crate::hash::stable_hash(&key))
                    }
                    None => leaf.response_id.clone(),
                };
                Session {
                    meta: SessionMeta {
                        id: id.clone(),
                        source: "api_server".to_string(),
                        started_at: leaf.created_at,
                        ..SessionMeta::default()
                    },
                    instructions: leaf.instructions.clone(),
                    origin: Some(Origin::ResponseStore),
                    lineage: vec![id],
                    messages: clean_history(leaf.history.clone()),
                    ..Session::default()
                }
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}

fn parse_body(id: &str, data: &str) -> Result<StoredResponse, String> {
    let v: Value = serde_json::from_str(data).map_err(|e| format!("data is not JSON: {e}"))?;
    let response = v.get("response");
    let created_at = response
        .and_then(|r| r.get("created_at"))
        .and_then(Value::as_f64);
    let history = match v.get("conversation_history") {
        Some(Value::Array(items)) => items.iter().filter_map(json_message).collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(_) => return Err("conversation_history is not a list".to_string()),
    };
    Ok(StoredResponse {
        response_id: id.to_string(),
        created_at,
        session_id: v
            .get("session_id")
            .and_then(Value::as_str)
            .map(str::to_string),
        instructions: v
            .get("instructions")
            .and_then(Value::as_str)
            .map(str::to_string),
        history,
    })
}

/// Rebuilds a clean conversation from a Responses `conversation_history`.
/// Hermes records each new input twice and, on the next chained call,
/// merges the copies (and older inputs) into one user message
/// (`"X\n\nX"`, `"Y\n\nX\n\nX"`), and later histories replay earlier
/// exchanges with their old answers. So: a user message keeps only its
/// paragraphs that are not earlier inputs (or its first paragraph), and an
/// exchange whose answer was already seen is a replay and is dropped.
fn clean_history(messages: Vec<Message>) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::with_capacity(messages.len());
    let mut inputs: Vec<String> = Vec::new();
    let mut answers: Vec<String> = Vec::new();
    let mut iter = messages.into_iter().peekable();
    while let Some(first) = iter.next() {
        let mut exchange = vec![first];
        while let Some(m) = iter.next_if(|m| m.role != Role::User) {
            exchange.push(m);
        }
        if exchange[0].role == Role::User {
            let text = exchange[0].content.clone();
            let mut fresh: Vec<&str> = Vec::new();
            for p in text.split("\n\n") {
                if !inputs.iter().any(|i| i == p) && !fresh.contains(&p) {
                    fresh.push(p);
                }
            }
            exchange[0].content = if fresh.is_empty() {
                text.split("\n\n").next().unwrap_or_default().to_string()
            } else {
                fresh.join("\n\n")
            };
        }
        let answer = exchange
            .iter()
            .rev()
            .find(|m| m.is_final_answer())
            .map(|m| m.content.clone());
        if let Some(a) = &answer {
            if answers.contains(a) {
                continue; // a replayed exchange
            }
            answers.push(a.clone());
        }
        if exchange[0].role == Role::User {
            if out
                .last()
                .is_some_and(|p| p.role == Role::User && p.content == exchange[0].content)
            {
                out.pop(); // the input recorded twice
            }
            inputs.push(exchange[0].content.clone());
        }
        out.extend(exchange);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(m: &[Message]) -> Vec<&str> {
        m.iter().map(|m| m.content.as_str()).collect()
    }

    #[test]
    fn cleans_duplicated_merged_and_replayed_inputs() {
        use Role::*;
        let h = |r, t: &str| Message::new(r, t);
        let history = vec![
            h(User, "J1\n\nJ1"),
            h(Assistant, "A1"),
            h(User, "J2\n\nJ1"),
            h(Assistant, "A1"),
            h(User, "J2"),
            h(Assistant, "A2"),
            h(User, "J3\n\nJ1"),
            h(Assistant, "A1"),
            h(User, "J3"),
            h(Assistant, "A3"),
        ];
        assert_eq!(
            texts(&clean_history(history)),
            ["J1", "A1", "J2", "A2", "J3", "A3"]
        );
        let doubled = vec![h(User, "a"), h(User, "a"), h(Assistant, "b")];
        assert_eq!(texts(&clean_history(doubled)), ["a", "b"]);
    }
}
