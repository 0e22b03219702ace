//! A tighter estimate for a known tokenizer family, still never under the
//! real count on the golden samples.
//!
//! The generic [`super::Estimate`] divides every kind of text by the fewest
//! bytes per token any real tokenizer reached, so it runs 1.07–1.84 times
//! the real count. A family's estimate instead prices each part of a sample
//! at that family's own rate:
//! - user and assistant text (content, reasoning) at the family's aggregate
//!   bytes per token of the captures' conversation texts (`conversation` in
//!   `fixtures/tokenizer/calibration.json`);
//! - the system prompt, tool definitions (their `tojson` length), tool
//!   results and tool calls (name and arguments) at tokens per byte, and the
//!   template's own tokens per message, per tool and per sample, fitted
//!   (least squares on the relative error, no coefficient below zero) to the
//!   family's counts of the 28 golden renderings
//!   (`fixtures/tokenizer/golden/families.json`), then raised until no golden
//!   sample is under, and by a margin that covers every sample when it is
//!   left out of the fit (leave-one-out).
//!
//! `scripts/tokenizer.sh estimate` (`scripts/tokenizer/estimate_fit.py`)
//! makes the constants below and prints their figures; `tests/it/tokens.rs`
//! checks that the estimate is never under and at most 15 % over on every
//! golden sample.

use serde_json::Value;

use super::{Count, Sample, json_len};
use crate::message::OutMsg;

/// A tokenizer family with an estimate of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Qwen 2 / 2.5 / 3 and Qwen 3.5 / 3.6 (also Hermes-4-14B).
    Qwen,
    /// Llama 3.x (also Hermes 3, Hermes-4-70B and -405B).
    Llama3,
}

/// What a family's estimate charges (see the module header).
struct Rates {
    /// Bytes per token of user and assistant text.
    text_bytes_per_token: f64,
    system: f64,
    tools: f64,
    tool_result: f64,
    call: f64,
    per_message: f64,
    per_tool: f64,
    per_sample: f64,
    /// The raise to the golden counts times the leave-one-out margin.
    factor: f64,
}

const QWEN: Rates = Rates {
    text_bytes_per_token: 3.775,
    system: 0.2197,
    tools: 0.2393,
    tool_result: 0.4526,
    call: 0.6043,
    per_message: 0.0,
    per_tool: 9.388,
    per_sample: 17.38,
    factor: 1.0458 * 1.0412,
};

const LLAMA3: Rates = Rates {
    text_bytes_per_token: 4.208,
    system: 0.2165,
    tools: 0.2401,
    tool_result: 0.5512,
    call: 0.7831,
    per_message: 0.4779,
    per_tool: 0.6261,
    per_sample: 53.73,
    factor: 1.0415 * 1.0377,
};

impl Family {
    pub const ALL: [Family; 2] = [Family::Qwen, Family::Llama3];

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Qwen => "qwen",
            Family::Llama3 => "llama3",
        }
    }

    fn rates(self) -> &'static Rates {
        match self {
            Family::Qwen => &QWEN,
            Family::Llama3 => &LLAMA3,
        }
    }

    /// The family of a served model, by its name (`config.yaml`'s `model`):
    /// Qwen models and Hermes-4-14B (a Qwen 3 base) are `qwen`; Llama 3
    /// models, Hermes 3 and Hermes-4-70B/-405B (Llama 3.1 bases) are
    /// `llama3`. Anything else has none (the generic estimate).
    pub fn of_model(model: &str) -> Option<Family> {
        let m = model.to_ascii_lowercase();
        let any = |keys: &[&str]| keys.iter().any(|k| m.contains(k));
        if any(&["qwen", "hermes-4-14b"]) {
            Some(Family::Qwen)
        } else if any(&[
            "llama-3",
            "llama3",
            "hermes-3",
            "hermes-4-70b",
            "hermes-4-405b",
        ]) {
            Some(Family::Llama3)
        } else {
            None
        }
    }

    /// Tokens of one non-system message from its parts, before the factor.
    fn message(self, m: &MsgParts) -> f64 {
        let r = self.rates();
        let text = if m.tool {
            m.text as f64 * r.tool_result
        } else {
            m.text as f64 / r.text_bytes_per_token
        };
        text + m.call_bytes as f64 * r.call + r.per_message
    }

    fn system(self, text: &str) -> f64 {
        text.len() as f64 * self.rates().system
    }

    fn tools(self, tools: &[Value]) -> f64 {
        let bytes: usize = tools.iter().map(py_json_len).sum();
        let r = self.rates();
        bytes as f64 * r.tools + tools.len() as f64 * r.per_tool
    }

    /// Sums the parts of a sample (system prompts, tools, messages, the
    /// template's per-sample tokens), raised by the family's factor and
    /// rounded up once.
    fn sum(
        self,
        system: f64,
        tools: Option<&[Value]>,
        msgs: impl Iterator<Item = MsgParts>,
    ) -> Count {
        let r = self.rates();
        let mut total = system + tools.map_or(0.0, |t| self.tools(t)) + r.per_sample;
        let (mut trainable, mut last) = (0.0, 0.0);
        for m in msgs {
            let n = self.message(&m);
            total += n;
            if m.assistant {
                trainable += n;
                last = n;
            }
        }
        let up = |x: f64| (x * r.factor).ceil() as usize;
        Count {
            total: up(total),
            trainable: up(trainable),
            last_turn: up(last),
        }
    }

    pub fn count(self, s: &Sample<'_>) -> Count {
        let system = s.system.map_or(0.0, |t| self.system(t));
        self.sum(system, s.tools, s.messages.iter().map(MsgParts::of_out))
    }

    /// The same for JSON messages (output lines' shape); system messages
    /// among them are priced as the system prompt.
    pub fn count_json(self, messages: &[Value], tools: Option<&[Value]>) -> Count {
        fn role(m: &Value) -> &str {
            m.get("role").and_then(Value::as_str).unwrap_or_default()
        }
        fn text(m: &Value) -> &str {
            m.get("content").and_then(Value::as_str).unwrap_or_default()
        }
        let system = messages
            .iter()
            .filter(|m| role(m) == "system")
            .map(|m| self.system(text(m)))
            .sum();
        let rest = messages.iter().filter(|m| role(m) != "system");
        self.sum(system, tools, rest.map(MsgParts::of_json))
    }
}

/// What a family's estimate reads of a message.
struct MsgParts {
    assistant: bool,
    tool: bool,
    /// Content and reasoning bytes.
    text: usize,
    /// Bytes of each call's name and arguments (as the template prints them).
    call_bytes: usize,
}

/// Bytes of a call's arguments as a template prints them: a string as is,
/// anything else as `tojson` writes it.
fn argument_bytes(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        other => py_json_len(other),
    }
}

impl MsgParts {
    fn of_out(m: &OutMsg) -> MsgParts {
        MsgParts {
            assistant: m.role == "assistant",
            tool: m.role == "tool",
            text: m.content.as_deref().map_or(0, str::len)
                + m.reasoning_content.as_deref().map_or(0, str::len),
            call_bytes: m
                .tool_calls
                .iter()
                .map(|c| c.function.name.len() + argument_bytes(&c.function.arguments))
                .sum(),
        }
    }

    fn of_json(m: &Value) -> MsgParts {
        let text = |k: &str| m.get(k).and_then(Value::as_str).map_or(0, str::len);
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        let calls = m.get("tool_calls").and_then(Value::as_array);
        let call_bytes = calls.into_iter().flatten().map(|c| {
            let f = &c["function"];
            f["name"].as_str().map_or(0, str::len) + argument_bytes(&f["arguments"])
        });
        MsgParts {
            assistant: role == "assistant",
            tool: role == "tool",
            text: text("content") + text("reasoning_content"),
            call_bytes: call_bytes.sum(),
        }
    }
}

/// Length of a value as Python's `json.dumps` writes it (what `tojson`
/// gives a template): the compact text plus a space after every `:` and
/// every `,` between items.
pub fn py_json_len(v: &Value) -> usize {
    fn spaces(v: &Value) -> usize {
        match v {
            Value::Object(m) => {
                2 * m.len() - usize::from(!m.is_empty()) + m.values().map(spaces).sum::<usize>()
            }
            Value::Array(a) => a.len().saturating_sub(1) + a.iter().map(spaces).sum::<usize>(),
            _ => 0,
        }
    }
    json_len(v) + spaces(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn py_json_len_is_the_length_python_writes() {
        let v = serde_json::json!({"a": [1, 2, {"b": "c, d: e"}], "f": {}, "g": []});
        // json.dumps(v) == '{"a": [1, 2, {"b": "c, d: e"}], "f": {}, "g": []}'
        assert_eq!(py_json_len(&v), 49);
    }

    #[test]
    fn families_by_model_name() {
        assert_eq!(Family::of_model("Qwen/Qwen3-8B"), Some(Family::Qwen));
        assert_eq!(
            Family::of_model("NousResearch/Hermes-4-14B"),
            Some(Family::Qwen)
        );
        assert_eq!(
            Family::of_model("NousResearch/Hermes-4-70B"),
            Some(Family::Llama3)
        );
        assert_eq!(
            Family::of_model("meta-llama/Llama-3.1-8B-Instruct"),
            Some(Family::Llama3)
        );
        assert_eq!(
            Family::of_model("NousResearch/Hermes-3-Llama-3.1-8B"),
            Some(Family::Llama3)
        );
        assert_eq!(Family::of_model("fake-model-1"), None);
        assert_eq!(Family::of_model("mistralai/Mistral-Nemo"), None);
    }
}
