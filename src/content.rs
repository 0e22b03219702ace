//! Decoding of stored message content and tool calls.

use serde_json::Value;

use crate::model::ToolCall;

/// Prefix Hermes puts before JSON-encoded structured content (v25+).
const JSON_PREFIX: &str = "\0json:";

/// Turns stored content into training text. Structured content (a
/// `\0json:` string, or a JSON list of parts from a session file) keeps its
/// text parts in order; images and other media become `[image]`/`[<type>]`.
pub fn decode(raw: &str) -> String {
    match raw.strip_prefix(JSON_PREFIX) {
        Some(json) => match serde_json::from_str::<Value>(json) {
            Ok(v) => value_text(&v),
            Err(_) => json.to_string(),
        },
        None => raw.to_string(),
    }
}

/// Text of a content value as it appears in JSON files (string, list of
/// parts, or null).
pub fn value_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => decode(s),
        Value::Array(parts) => {
            let texts: Vec<String> = parts.iter().map(part_text).collect();
            texts
                .into_iter()
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
                .join("\n")
        }
        Value::Object(_) => part_text(v),
        other => other.to_string(),
    }
}

fn part_text(part: &Value) -> String {
    match part {
        Value::String(s) => s.clone(),
        Value::Object(map) => {
            if let Some(t) = map.get("text").and_then(Value::as_str) {
                return t.to_string();
            }
            if let Some(c) = map.get("content") {
                return value_text(c);
            }
            match map.get("type").and_then(Value::as_str) {
                Some(kind) if kind.contains("image") => "[image]".to_string(),
                Some(kind) => format!("[{kind}]"),
                None => part.to_string(),
            }
        }
        other => other.to_string(),
    }
}

/// Deepest nesting of tool-call arguments (`{}` is 1) that the export
/// writes and `validate` accepts: one limit for both, well inside the JSON
/// parser's own (128 levels for a whole line). Deeper arguments are kept
/// as text, and the turn is skipped as `tool_arguments_too_deep`.
pub const MAX_ARGUMENTS_DEPTH: usize = 64;

/// How deep `v` nests (`{}` and `[]` count 1, scalars 0).
pub fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Parses a stored `tool_calls` JSON array (OpenAI shape plus Hermes
/// extras). Arguments stored as a JSON string are parsed; when they do not
/// parse, or nest deeper than [`MAX_ARGUMENTS_DEPTH`], the raw string is
/// kept so a check can reject the turn.
pub fn parse_tool_calls(v: &Value) -> Option<Vec<ToolCall>> {
    let list = v.as_array()?;
    let mut calls = Vec::with_capacity(list.len());
    for item in list {
        let func = item.get("function").unwrap_or(item);
        let name = func.get("name").and_then(Value::as_str)?.to_string();
        let id = item
            .get("id")
            .or_else(|| item.get("call_id"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let arguments = match func.get("arguments") {
            Some(Value::String(s)) => serde_json::from_str::<Value>(s)
                .ok()
                .filter(|v| depth(v) <= MAX_ARGUMENTS_DEPTH)
                .unwrap_or_else(|| Value::String(s.clone())),
            Some(v) if depth(v) > MAX_ARGUMENTS_DEPTH => Value::String(v.to_string()),
            Some(v) => v.clone(),
            None => Value::Object(Default::default()),
        };
        calls.push(ToolCall {
            id,
            name,
            arguments,
        });
    }
    Some(calls)
}

/// Tool-call list from the stored string; `Err` when it is not valid JSON.
pub fn tool_calls_from_str(raw: Option<&str>) -> Result<Vec<ToolCall>, String> {
    let Some(raw) = raw.filter(|s| !s.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    let v: Value = serde_json::from_str(raw).map_err(|e| format!("tool_calls is not JSON: {e}"))?;
    if v.is_null() {
        return Ok(Vec::new());
    }
    parse_tool_calls(&v).ok_or_else(|| "tool_calls is not a list of calls".to_string())
}

/// `head` and `tail` of a text whose middle (`removed` bytes) was cut,
/// with a visible marker between them.
pub fn mark_cut(head: &str, tail: &str, removed: usize) -> String {
    format!("{head}{MARK_OPEN}{removed}{MARK_CLOSE}{tail}")
}

/// The marker that stands where a cut text lost its middle: `MARK_OPEN`,
/// the number of bytes removed, `MARK_CLOSE`.
pub const MARK_OPEN: &str = "\n[… ";
pub const MARK_CLOSE: &str = " bytes cut by hermes-harvest to fit the token budget …]\n";

/// A text cut by [`mark_cut`] split back into head, tail and bytes removed.
pub fn split_marked(text: &str) -> Option<(&str, &str, usize)> {
    let open = text.find(MARK_OPEN)?;
    let rest = &text[open + MARK_OPEN.len()..];
    let close = rest.find(MARK_CLOSE)?;
    let n = rest[..close].parse().ok()?;
    Some((&text[..open], &rest[close + MARK_CLOSE.len()..], n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_json_prefixed_multimodal_content() {
        let raw = "\0json:[{\"type\":\"text\",\"text\":\"look\"},{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:...\"}}]";
        assert_eq!(decode(raw), "look\n[image]");
        assert_eq!(decode("plain"), "plain");
        assert_eq!(decode("\0json:not json"), "not json");
    }

    #[test]
    fn parses_string_arguments() {
        let calls = tool_calls_from_str(Some(
            r#"[{"id":"call_1","type":"function","function":{"name":"todo","arguments":"{\"a\": 1}"}}]"#,
        ))
        .unwrap();
        assert_eq!(calls[0].name, "todo");
        assert_eq!(calls[0].arguments["a"], 1);
        assert!(tool_calls_from_str(Some("{oops")).is_err());
        assert!(tool_calls_from_str(None).unwrap().is_empty());
    }
}
