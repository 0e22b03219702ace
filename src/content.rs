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

/// Arguments stored as a JSON string: parsed, or (when they do not parse,
/// or nest deeper than [`MAX_ARGUMENTS_DEPTH`]) kept as the string.
fn arguments_from_str(s: &str) -> Value {
    serde_json::from_str::<Value>(s)
        .ok()
        .filter(|v| depth(v) <= MAX_ARGUMENTS_DEPTH)
        .unwrap_or_else(|| Value::String(s.to_string()))
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
            Some(Value::String(s)) => arguments_from_str(s),
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
    if let Ok(calls) = serde_json::from_str::<usual::Calls>(raw) {
        return Ok(calls.0);
    }
    let v: Value = serde_json::from_str(raw).map_err(|e| format!("tool_calls is not JSON: {e}"))?;
    if v.is_null() {
        return Ok(Vec::new());
    }
    parse_tool_calls(&v).ok_or_else(|| "tool_calls is not a list of calls".to_string())
}

/// The usual shape of a stored tool-call list, read straight into calls
/// without a JSON tree of it: a list of objects each with a string `id` and
/// a `function` object with a string `name` and string `arguments`, every
/// key once. Other keys may hold any JSON, which is checked as strictly as
/// the tree would read it and then dropped. Whatever else a list holds (a
/// call without an id, a repeated key, arguments as an object, not a list
/// at all, not JSON) is not read here, and [`parse_tool_calls`] reads it
/// from the tree, so both ways give the same calls.
mod usual {
    use std::borrow::Cow;
    use std::fmt;

    use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

    use crate::model::ToolCall;

    pub struct Calls(pub Vec<ToolCall>);

    /// Why a list is left to the tree (the message is never shown).
    fn other<E: de::Error>() -> E {
        E::custom("not the usual shape")
    }

    impl<'de> Deserialize<'de> for Calls {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct List;
            impl<'de> Visitor<'de> for List {
                type Value = Calls;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a list of tool calls")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Calls, A::Error> {
                    let mut calls = Vec::with_capacity(seq.size_hint().unwrap_or(1));
                    while let Some(Call(c)) = seq.next_element()? {
                        calls.push(c);
                    }
                    Ok(Calls(calls))
                }
            }
            d.deserialize_seq(List)
        }
    }

    struct Call(ToolCall);

    impl<'de> Deserialize<'de> for Call {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Item;
            impl<'de> Visitor<'de> for Item {
                type Value = Call;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a tool call")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Call, A::Error> {
                    let (mut id, mut function) = (None, None);
                    while let Some(key) = map.next_key::<Text<'de>>()? {
                        match key.0.as_ref() {
                            "id" if id.is_none() => id = Some(map.next_value::<Text<'de>>()?),
                            "function" if function.is_none() => {
                                function = Some(map.next_value::<Function>()?)
                            }
                            "id" | "function" => return Err(other()),
                            _ => {
                                map.next_value::<Strict>()?;
                            }
                        }
                    }
                    let (Some(id), Some(Function(name, arguments))) = (id, function) else {
                        return Err(other());
                    };
                    Ok(Call(ToolCall {
                        id: id.0.into_owned(),
                        name,
                        arguments: super::arguments_from_str(&arguments),
                    }))
                }
            }
            d.deserialize_map(Item)
        }
    }

    /// A call's function: its name and its arguments' text.
    struct Function(String, String);

    impl<'de> Deserialize<'de> for Function {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Func;
            impl<'de> Visitor<'de> for Func {
                type Value = Function;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a function")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Function, A::Error> {
                    let (mut name, mut arguments) = (None, None);
                    while let Some(key) = map.next_key::<Text<'de>>()? {
                        match key.0.as_ref() {
                            "name" if name.is_none() => name = Some(map.next_value::<Text<'de>>()?),
                            "arguments" if arguments.is_none() => {
                                arguments = Some(map.next_value::<Text<'de>>()?)
                            }
                            "name" | "arguments" => return Err(other()),
                            _ => {
                                map.next_value::<Strict>()?;
                            }
                        }
                    }
                    match (name, arguments) {
                        (Some(n), Some(a)) => Ok(Function(n.0.into_owned(), a.0.into_owned())),
                        _ => Err(other()),
                    }
                }
            }
            d.deserialize_map(Func)
        }
    }

    /// A string, borrowed from the input when it has no escapes.
    struct Text<'de>(Cow<'de, str>);

    impl<'de> Deserialize<'de> for Text<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Str;
            impl<'de> Visitor<'de> for Str {
                type Value = Text<'de>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a string")
                }
                fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                    Ok(Text(Cow::Borrowed(v)))
                }
                fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                    Ok(Text(Cow::Owned(v.to_string())))
                }
                fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                    Ok(Text(Cow::Owned(v)))
                }
            }
            d.deserialize_str(Str)
        }
    }

    /// Any JSON value, read as the tree reads it (numbers included, through
    /// the same path), and kept nowhere.
    struct Strict;

    impl<'de> Deserialize<'de> for Strict {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Any;
            impl<'de> Visitor<'de> for Any {
                type Value = Strict;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("any JSON value")
                }
                fn visit_bool<E>(self, _: bool) -> Result<Strict, E> {
                    Ok(Strict)
                }
                fn visit_i64<E>(self, _: i64) -> Result<Strict, E> {
                    Ok(Strict)
                }
                fn visit_u64<E>(self, _: u64) -> Result<Strict, E> {
                    Ok(Strict)
                }
                fn visit_f64<E>(self, _: f64) -> Result<Strict, E> {
                    Ok(Strict)
                }
                fn visit_str<E>(self, _: &str) -> Result<Strict, E> {
                    Ok(Strict)
                }
                fn visit_unit<E>(self) -> Result<Strict, E> {
                    Ok(Strict)
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
                    while seq.next_element::<Strict>()?.is_some() {}
                    Ok(Strict)
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
                    while map.next_entry::<Text<'de>, Strict>()?.is_some() {}
                    Ok(Strict)
                }
            }
            d.deserialize_any(Any)
        }
    }
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

    /// The tree reading alone (what [`tool_calls_from_str`] does when the
    /// usual reading declines).
    fn by_tree(raw: &str) -> Result<Vec<ToolCall>, String> {
        let v: Value =
            serde_json::from_str(raw).map_err(|e| format!("tool_calls is not JSON: {e}"))?;
        if v.is_null() {
            return Ok(Vec::new());
        }
        parse_tool_calls(&v).ok_or_else(|| "tool_calls is not a list of calls".to_string())
    }

    #[test]
    fn the_usual_reading_gives_what_the_tree_gives() {
        let fixed = [
            r#"[{"id": "call_1", "call_id": "call_1", "response_item_id": "fc_1", "type": "function", "function": {"name": "todo", "arguments": "{\"todos\": [{\"id\": \"1\"}]}"}}]"#,
            r#"[{"id":"a","function":{"name":"x","arguments":"not json"}},{"id":"b","function":{"arguments":"[1,2]","name":"y","extra":{"n":[1,2.5,-3,true,null]}}}]"#,
            r#"[{"id":"a","id":"b","function":{"name":"x","arguments":"{}"}}]"#,
            r#"[{"id":"a","function":{"name":"x","name":"z","arguments":"{}"}}]"#,
            r#"[{"call_id":"c","function":{"name":"x","arguments":"{}"}}]"#,
            r#"[{"id":7,"function":{"name":"x","arguments":"{}"}}]"#,
            r#"[{"id":"a","function":{"name":"x","arguments":{"k":1}}}]"#,
            r#"[{"id":"a","function":{"name":"x"}}]"#,
            r#"[{"id":"a","name":"x","arguments":"{}"}]"#,
            r#"[{"id":"a","function":"x"}]"#,
            r#"[{"id":"a","function":{"name":"x","arguments":"{}"},"big":1e400}]"#,
            r#"[{"id":"a","function":{"name":"x","arguments":"{}"}}] x"#,
            r#"[{"id":"ab","function":{"name":"x
","arguments":"{"é": 1}"}}]"#,
            r#"[{"id":"a","function":{"name":"x","arguments":"{}"}},]"#,
            r#"{"id":"a"}"#,
            "[]",
            "null",
            "[1]",
            "[null]",
            "{oops",
        ];
        for raw in fixed {
            assert_eq!(tool_calls_from_str(Some(raw)), by_tree(raw), "{raw}");
        }
        // Random lists over the keys and values the readings look at.
        let keys = [
            r#""id""#,
            r#""call_id""#,
            r#""function""#,
            r#""name""#,
            r#""arguments""#,
            r#""type""#,
        ];
        let values = [
            r#""v""#,
            r#""{\"a\": [1, {\"b\": null}]}""#,
            r#""[""#,
            "12",
            "-0.5e3",
            "1e999",
            "null",
            "true",
            "[]",
            "{}",
            r#"[1, "x"]"#,
        ];
        let mut usual_read = 0;
        let mut next = crate::hash::test_rng(0x51ed_2701_9d3c_4a6b);
        let mut pick = |n: usize| (next() % n as u64) as usize;
        for _ in 0..20_000 {
            let object = |pick: &mut dyn FnMut(usize) -> usize, depth: usize| -> String {
                let fields: Vec<String> = (0..pick(5))
                    .map(|_| {
                        let key = keys[pick(keys.len())];
                        let value = if depth == 0 && pick(3) == 0 {
                            let inner: Vec<String> = (0..pick(4))
                                .map(|_| {
                                    format!(
                                        "{}: {}",
                                        keys[pick(keys.len())],
                                        values[pick(values.len())]
                                    )
                                })
                                .collect();
                            format!("{{{}}}", inner.join(", "))
                        } else {
                            values[pick(values.len())].to_string()
                        };
                        format!("{key}: {value}")
                    })
                    .collect();
                format!("{{{}}}", fields.join(", "))
            };
            // Half the items in the usual shape, with random values and
            // extra keys.
            let item = |pick: &mut dyn FnMut(usize) -> usize| -> String {
                if pick(2) == 0 {
                    return object(pick, 0);
                }
                let value = |pick: &mut dyn FnMut(usize) -> usize| {
                    if pick(3) == 0 {
                        values[pick(values.len())]
                    } else {
                        values[pick(2)]
                    }
                };
                let extra = |pick: &mut dyn FnMut(usize) -> usize| -> String {
                    (0..pick(2))
                        .map(|_| {
                            format!(
                                ", {}: {}",
                                keys[pick(keys.len())],
                                values[pick(values.len())]
                            )
                        })
                        .collect()
                };
                let function = format!(
                    r#"{{"name": {}, "arguments": {}{}}}"#,
                    value(pick),
                    value(pick),
                    extra(pick)
                );
                format!(
                    r#"{{"id": {}, "function": {function}{}}}"#,
                    value(pick),
                    extra(pick)
                )
            };
            let items: Vec<String> = (0..pick(3)).map(|_| item(&mut pick)).collect();
            let raw = format!("[{}]", items.join(", "));
            usual_read += usize::from(
                !items.is_empty() && serde_json::from_str::<usual::Calls>(&raw).is_ok(),
            );
            assert_eq!(tool_calls_from_str(Some(&raw)), by_tree(&raw), "{raw}");
        }
        assert!(
            usual_read > 1_000,
            "the usual reading was tried: {usual_read}"
        );
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
