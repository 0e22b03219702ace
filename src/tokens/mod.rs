//! Token counts of samples as the trainer sees them: the whole rendered
//! sample (system prompt, tool definitions, every message and the chat
//! template's own tokens) and the trainable part (assistant turns).
//!
//! With `--tokenizer` the count is exact ([`chat::ChatTokenizer`]);
//! without it, [`Estimate`] gives a conservative figure for the same parts:
//! byte lengths divided by the fewest bytes per token that real tokenizers
//! reached on Hermes data, plus the template tokens each part costs.

pub mod bpe;
pub mod chat;
pub mod family;
pub mod hub;
pub mod pyjson;

use std::path::Path;

use anyhow::Result;
use serde::Serialize;
use serde::ser::SerializeSeq;
use serde_json::Value;

use crate::message::OutMsg;
use chat::ChatTokenizer;

/// Tokens of one rendered sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Count {
    pub total: usize,
    /// Tokens of the assistant turns (what assistant-only loss trains on:
    /// TRL with generation blocks, axolotl).
    pub trainable: usize,
    /// Tokens of the last assistant turn alone (what mlx-lm's
    /// `--mask-prompt` trains on).
    pub last_turn: usize,
}

/// A sample as the trainer renders it: the system prompt, the messages
/// and the tool definitions.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    pub system: Option<&'a str>,
    pub messages: &'a [OutMsg],
    pub tools: Option<&'a [Value]>,
}

/// The message list a template sees: the system message, then the rest
/// (with `fold`, the system prompt starts the first user message instead).
/// As transformers does, a message key whose value is null is left out
/// (a template sees it undefined, not None).
struct MessageList<'a>(&'a Sample<'a>, bool);

struct TemplateMsg<'a>(&'a OutMsg);

impl Serialize for TemplateMsg<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let m = self.0;
        let mut map = ser.serialize_map(None)?;
        map.serialize_entry("role", m.role)?;
        if let Some(c) = &m.content {
            map.serialize_entry("content", c)?;
        }
        if !m.tool_calls.is_empty() {
            map.serialize_entry("tool_calls", &m.tool_calls)?;
        }
        if let Some(id) = &m.tool_call_id {
            map.serialize_entry("tool_call_id", id)?;
        }
        if let Some(n) = &m.name {
            map.serialize_entry("name", n)?;
        }
        if let Some(r) = &m.reasoning_content {
            map.serialize_entry("reasoning_content", r)?;
        }
        map.end()
    }
}

impl Serialize for MessageList<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let s = self.0;
        let mut seq = ser.serialize_seq(Some(s.messages.len() + 1))?;
        match s.system {
            Some(system) if self.1 => {
                for m in crate::message::folded(system, s.messages) {
                    seq.serialize_element(&TemplateMsg(&m))?;
                }
                return seq.end();
            }
            Some(system) => seq.serialize_element(&OutMsg::text("system", system))?,
            None => {}
        }
        for m in s.messages {
            seq.serialize_element(&TemplateMsg(m))?;
        }
        seq.end()
    }
}

/// The chat template the exact counts used, as the manifest records it.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateDoc {
    pub source: String,
    pub generation_block: bool,
    /// How `trainable` was found: `generation_block` or `prefix_diff`.
    pub trainable_by: &'static str,
}

/// Bytes per token assumed without a tokenizer. Measured on the Hermes
/// captures with real tokenizers (see `fixtures/tokenizer/README.md`); the
/// figures are the smallest seen for each kind of text, lowered a little,
/// so the estimate errs towards too many tokens.
pub const BYTES_PER_TOKEN_SYSTEM: f64 = 4.2;
pub const BYTES_PER_TOKEN_TOOLS: f64 = 3.4;
pub const BYTES_PER_TOKEN_TEXT: f64 = 2.4;
/// Template tokens around each message (role header, end marker).
pub const TOKENS_PER_MESSAGE: usize = 8;
/// Template tokens per tool call (its wrapper and the JSON around it).
pub const TOKENS_PER_CALL: usize = 12;
/// Template tokens of a tool list (the instructions around it) and per tool.
pub const TOKENS_TOOL_PREAMBLE: usize = 120;
pub const TOKENS_PER_TOOL: usize = 4;

/// The conservative estimate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Estimate;

fn text_tokens(bytes: usize, per_token: f64) -> usize {
    (bytes as f64 / per_token).ceil() as usize
}

impl Estimate {
    /// A non-system message of `bytes` of text (content, reasoning, call
    /// names and arguments) with `calls` tool calls.
    fn message_tokens(bytes: usize, calls: usize) -> usize {
        text_tokens(bytes, BYTES_PER_TOKEN_TEXT) + TOKENS_PER_MESSAGE + calls * TOKENS_PER_CALL
    }

    fn message(m: &OutMsg) -> usize {
        let mut bytes = m.content.as_deref().map_or(0, str::len);
        bytes += m.reasoning_content.as_deref().map_or(0, str::len);
        let mut calls = 0;
        for c in &m.tool_calls {
            bytes += c.function.name.len() + c.id.len();
            bytes += match &c.function.arguments {
                Value::String(s) => s.len(),
                other => json_len(other),
            };
            calls += 1;
        }
        Estimate::message_tokens(bytes, calls)
    }

    pub fn tools(tools: &[Value]) -> usize {
        if tools.is_empty() {
            return 0;
        }
        let bytes: usize = tools.iter().map(json_len).sum();
        text_tokens(bytes, BYTES_PER_TOKEN_TOOLS)
            + TOKENS_TOOL_PREAMBLE
            + tools.len() * TOKENS_PER_TOOL
    }

    pub fn system(text: &str) -> usize {
        text_tokens(text.len(), BYTES_PER_TOKEN_SYSTEM) + TOKENS_PER_MESSAGE
    }

    pub fn count(s: &Sample<'_>) -> Count {
        let mut c = Count {
            total: s.system.map_or(0, Estimate::system) + s.tools.map_or(0, Estimate::tools),
            ..Count::default()
        };
        for m in s.messages {
            let n = Estimate::message(m);
            c.total += n;
            if m.role == "assistant" {
                c.trainable += n;
                c.last_turn = n;
            }
        }
        c
    }
}

/// Length of a value's compact JSON text, without building it.
pub fn json_len(v: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Counter(0);
    serde_json::to_writer(&mut c, v).expect("JSON values serialize");
    c.0
}

/// Counts samples: exactly with a model's tokenizer, else by estimate
/// (a tokenizer family's own, or the generic one).
pub enum Counter {
    Estimate,
    Family(family::Family),
    Exact(Box<ChatTokenizer>),
}

impl Counter {
    pub fn new(tokenizer: Option<&Path>) -> Result<Counter> {
        Counter::with_estimate(tokenizer, None)
    }

    /// Exact with `tokenizer`, else the estimate of `family` (generic
    /// without one).
    pub fn with_estimate(
        tokenizer: Option<&Path>,
        family: Option<family::Family>,
    ) -> Result<Counter> {
        Ok(match (tokenizer, family) {
            (Some(p), _) => Counter::Exact(Box::new(ChatTokenizer::load(&hub::resolve(p)?)?)),
            (None, Some(f)) => Counter::Family(f),
            (None, None) => Counter::Estimate,
        })
    }

    /// The exact counter for `--tokenizer`, its system prompts folded into
    /// the first user turn with `fold`, checked on a probe sample: a chat
    /// template that raises on the smallest sample the run can write (a
    /// system prompt unless `none` is asked, one user turn, one answer) is
    /// a usage error (exit 2) with the template's message, before anything
    /// is read or written.
    pub fn for_export(
        tokenizer: Option<&Path>,
        family: Option<family::Family>,
        system: bool,
        fold: bool,
    ) -> Result<Counter> {
        let mut counter = Counter::with_estimate(tokenizer, family)?;
        if let Counter::Exact(t) = &mut counter {
            t.fold_system = fold;
        }
        let messages = [
            OutMsg::text("user", "Hello, how are you?"),
            OutMsg::text("assistant", "I am well, thank you."),
        ];
        let probe = Sample {
            system: system.then_some("You are a helpful assistant."),
            messages: &messages,
            tools: None,
        };
        if let Err(e) = counter.count(&probe) {
            let hint = if system && !fold {
                " (if it refuses a system turn, try --fold-system or --system-prompt none)"
            } else {
                ""
            };
            return Err(crate::exit::Failure::new(
                crate::exit::USAGE,
                format!("--tokenizer: the chat template cannot render a probe sample: {e:#}{hint}"),
            )
            .into());
        }
        Ok(counter)
    }

    /// A counter of its own for another thread: the same tokenizer and
    /// template, so the same counts.
    pub fn fork(&self) -> Counter {
        match self {
            Counter::Estimate => Counter::Estimate,
            Counter::Family(f) => Counter::Family(*f),
            Counter::Exact(t) => Counter::Exact(t.clone()),
        }
    }

    /// Leaves the last assistant turn's tokens uncounted (0) where the
    /// template marks assistant turns with generation blocks: they take a
    /// second render of each sample, and only a manifest shows them.
    /// Without generation blocks they come with the trainable tokens, at no
    /// further cost, and are still counted.
    pub fn without_last_turn(&mut self) {
        if let Counter::Exact(t) = self {
            t.last_turn = false;
        }
    }

    pub fn is_exact(&self) -> bool {
        matches!(self, Counter::Exact(_))
    }

    /// The template counted with: its source and whether it has a
    /// generation block.
    pub fn template(&self) -> Option<TemplateDoc> {
        match self {
            Counter::Estimate | Counter::Family(_) => None,
            Counter::Exact(t) => Some(TemplateDoc {
                source: t.template_origin.clone(),
                generation_block: t.generation_block,
                trainable_by: if t.generation_block {
                    "generation_block"
                } else {
                    "prefix_diff"
                },
            }),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Counter::Exact(t) => t.description.clone(),
            Counter::Estimate => format!(
                "estimate: {BYTES_PER_TOKEN_SYSTEM} bytes a token for the system prompt, {BYTES_PER_TOKEN_TOOLS} for tool definitions, {BYTES_PER_TOKEN_TEXT} for messages, plus template tokens"
            ),
            Counter::Family(f) => format!(
                "estimate for the {} tokenizer family (its own rates per kind of text and template tokens, never under its count of the golden samples)",
                f.as_str()
            ),
        }
    }

    /// Tokens of the rendered sample and its trainable part. A template
    /// that fails on the sample is an error (the trainer would fail on it
    /// too).
    pub fn count(&mut self, s: &Sample<'_>) -> Result<Count> {
        self.count_with(s, true)
    }

    /// Tokens of the rendered sample (`trainable` left 0: cheaper).
    pub fn total(&mut self, s: &Sample<'_>) -> Result<Count> {
        self.count_with(s, false)
    }

    fn count_with(&mut self, s: &Sample<'_>, trainable: bool) -> Result<Count> {
        match self {
            Counter::Estimate => Ok(Estimate::count(s)),
            Counter::Family(f) => Ok(f.count(s)),
            Counter::Exact(t) => {
                let messages = minijinja::Value::from_serialize(MessageList(s, t.fold_system));
                let tools = s.tools.map(minijinja::Value::from_serialize);
                t.count(&messages, tools.as_ref(), trainable)
            }
        }
    }
}

/// JSON messages and tools as a template sees them: top-level null keys
/// of a message left out (as transformers does).
fn template_input(
    messages: &[Value],
    tools: Option<&[Value]>,
) -> (minijinja::Value, Option<minijinja::Value>) {
    let msgs: Vec<Value> = messages
        .iter()
        .map(|m| match m {
            Value::Object(map) => Value::Object(
                map.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            other => other.clone(),
        })
        .collect();
    (
        minijinja::Value::from_serialize(&msgs),
        tools.map(minijinja::Value::from_serialize),
    )
}

fn estimate_json(messages: &[Value], tools: Option<&[Value]>) -> Count {
    let mut c = Count {
        total: tools.map_or(0, Estimate::tools),
        ..Count::default()
    };
    for m in messages {
        let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
        let text = m.get("content").and_then(Value::as_str).unwrap_or_default();
        if role == "system" {
            c.total += Estimate::system(text);
            continue;
        }
        let mut bytes = text.len();
        bytes += m
            .get("reasoning_content")
            .and_then(Value::as_str)
            .map_or(0, str::len);
        let calls = m.get("tool_calls").and_then(Value::as_array);
        bytes += calls.map_or(0, |c| c.iter().map(json_len).sum());
        let n = Estimate::message_tokens(bytes, calls.map_or(0, Vec::len));
        c.total += n;
        if role == "assistant" {
            c.trainable += n;
            c.last_turn = n;
        }
    }
    c
}

impl Counter {
    /// Tokens of rendering JSON `messages` (output lines' shape) with `tools`.
    pub fn count_json(&mut self, messages: &[Value], tools: Option<&[Value]>) -> Result<Count> {
        match self {
            Counter::Estimate => Ok(estimate_json(messages, tools)),
            Counter::Family(f) => Ok(f.count_json(messages, tools)),
            Counter::Exact(t) => {
                let (messages, tools) = template_input(messages, tools);
                t.count(&messages, tools.as_ref(), true)
            }
        }
    }

    /// The rendered text of JSON `messages` with `tools` (exact counter only).
    pub fn render_json(
        &self,
        messages: &[Value],
        tools: Option<&[Value]>,
    ) -> Option<Result<String>> {
        match self {
            Counter::Estimate | Counter::Family(_) => None,
            Counter::Exact(t) => {
                let (messages, tools) = template_input(messages, tools);
                Some(t.render(&messages, tools.as_ref()))
            }
        }
    }

    /// Tokens of an output line as its trainer renders it: SFT `messages`
    /// with `tools`; a DPO pair's prompt with its longer side (trainable:
    /// the chosen side); a flat pair as system, user and answer.
    pub fn count_line(&mut self, line: &Value) -> Result<Count> {
        let tools = line
            .get("tools")
            .and_then(Value::as_array)
            .map(Vec::as_slice);
        let list = |k: &str| line.get(k).and_then(Value::as_array).cloned();
        if let Some(messages) = list("messages") {
            return self.count_json(&messages, tools);
        }
        let (prompt, chosen, rejected) = match (list("prompt"), list("chosen"), list("rejected")) {
            (Some(p), Some(c), Some(r)) => (p, c, r),
            _ => {
                let text = |k: &str| line.get(k).and_then(Value::as_str).unwrap_or_default();
                let mut p = Vec::new();
                if let Some(s) = line.get("system").and_then(Value::as_str) {
                    p.push(serde_json::json!({"role": "system", "content": s}));
                }
                p.push(serde_json::json!({"role": "user", "content": text("prompt")}));
                let side =
                    |k: &str| vec![serde_json::json!({"role": "assistant", "content": text(k)})];
                (p, side("chosen"), side("rejected"))
            }
        };
        let mut best = Count::default();
        let prompt_only = self.count_json(&prompt, tools)?.total;
        for (k, side) in [chosen, rejected].into_iter().enumerate() {
            let mut all = prompt.clone();
            all.extend(side);
            let c = self.count_json(&all, tools)?;
            best.total = best.total.max(c.total);
            if k == 0 {
                best.trainable = c.total.saturating_sub(prompt_only);
                best.last_turn = best.trainable;
            }
        }
        Ok(best)
    }
}
