//! Formatters: from a rebuilt conversation to output lines. The wire
//! structs live here (the messages in `message`) so the model can change
//! while the JSONL contract stays put.

pub mod dpo;
pub mod drops;
pub mod fit;
pub mod sft;
mod system;
pub mod tools;

pub use crate::message::{OutCall, OutFunction, OutMsg, fold_into, folded};
pub use system::SystemPolicy;

use serde_json::Value;

use crate::model::{Message, Role, Session};
use crate::rebuild::Signal;
use crate::skip::Skip;

/// How messages are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsgOptions {
    /// Tool-call arguments as JSON strings (OpenAI flavour).
    pub string_arguments: bool,
    pub include_reasoning: bool,
}

/// What the formatters need to know (and nothing else of the export).
#[derive(Debug, Clone)]
pub struct FormatOptions {
    pub msg: MsgOptions,
    /// Budget of a whole rendered sample, in tokens.
    pub max_tokens: usize,
    pub tools: tools::ToolsPolicy,
    /// Other offered tools a `used` sample may carry besides those it calls.
    pub distractors: usize,
    /// Share of the budget an SFT sample that starts mid-session may give
    /// to the turns before it.
    pub sft_context: f64,
    pub signals: Vec<Signal>,
    pub flat_dpo: bool,
    /// The system prompt goes at the start of the first user turn
    /// (`--fold-system`).
    pub fold_system: bool,
}

/// How the formatters write a stored message.
impl OutMsg {
    pub fn from_message(m: &Message, cfg: &MsgOptions) -> OutMsg {
        let tool_calls: Vec<OutCall> = m
            .tool_calls
            .iter()
            .map(|c| OutCall {
                id: c.id.clone(),
                kind: "function",
                function: OutFunction {
                    name: c.name.clone(),
                    arguments: if cfg.string_arguments {
                        Value::String(match &c.arguments {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                    } else {
                        c.arguments.clone()
                    },
                },
            })
            .collect();
        let content = if cfg.string_arguments && !tool_calls.is_empty() && m.content.is_empty() {
            None
        } else {
            Some(m.content.clone())
        };
        OutMsg {
            role: m.role.as_str(),
            content,
            tool_calls,
            tool_call_id: (m.role == Role::Tool)
                .then(|| m.tool_call_id.clone())
                .flatten(),
            name: (m.role == Role::Tool)
                .then(|| m.tool_name.clone())
                .flatten(),
            reasoning_content: (cfg.include_reasoning && m.role == Role::Assistant)
                .then(|| m.reasoning.clone())
                .flatten(),
        }
    }
}

/// The system prompt a sample carries under the configured policy.
pub fn system_text(s: &Session, policy: &SystemPolicy) -> Option<String> {
    let stored = || {
        let parts: Vec<&str> = [s.system_prompt.as_deref(), s.instructions.as_deref()]
            .into_iter()
            .flatten()
            .filter(|p| !p.trim().is_empty())
            .collect();
        (!parts.is_empty()).then(|| parts.join("\n\n"))
    };
    match policy {
        SystemPolicy::None => None,
        SystemPolicy::Fixed(text) => Some(text.clone()),
        SystemPolicy::Session => stored(),
        SystemPolicy::Soul(soul) => {
            let persona = s
                .system_prompt
                .as_deref()
                .and_then(|p| soul_part(p, soul.as_deref()));
            let parts: Vec<&str> = [persona, s.instructions.as_deref()]
                .into_iter()
                .flatten()
                .filter(|p| !p.trim().is_empty())
                .collect();
            (!parts.is_empty()).then(|| parts.join("\n\n"))
        }
    }
}

/// The prompts a sample may carry, in the order they are tried, each
/// with the name the summary and the manifest count it under. A stored
/// prompt (`session`, `soul`) falls back to shorter ones when a sample
/// does not fit with it: the session prompt to its persona part, then to
/// none; a prompt equal to the one before it is not tried again.
pub fn system_chain(s: &Session, policy: &SystemPolicy) -> Vec<(&'static str, Option<String>)> {
    let mut chain = vec![(policy.as_str(), system_text(s, policy))];
    let fallbacks: &[SystemPolicy] = match policy {
        SystemPolicy::Session => &[SystemPolicy::Soul(None), SystemPolicy::None],
        SystemPolicy::Soul(_) => &[SystemPolicy::None],
        SystemPolicy::None | SystemPolicy::Fixed(_) => &[],
    };
    // Under `session` the persona part is found by Hermes's own paragraph
    // openings (see [`soul_part`]).
    for f in fallbacks {
        let text = system_text(s, f);
        if chain.iter().all(|(_, t)| *t != text) {
            chain.push((f.as_str(), text));
        }
    }
    chain
}

/// Paragraph openings of what Hermes adds after the persona: its own
/// platform notes, memory and skill guidance, the environment block, the
/// channel hints and the session facts.
const HARNESS_OPENINGS: [&str; 14] = [
    "You run on Hermes Agent",
    "If the user asks about configuring",
    "You have persistent memory",
    "# ",
    "## ",
    "Host:",
    "User home directory:",
    "Current working directory:",
    "Active Hermes profile",
    "You're responding through",
    "You are responding through",
    "Conversation started:",
    "Model:",
    "<memory",
];

/// The persona part of a stored Hermes system prompt. Hermes puts the
/// home's `SOUL.md` first; when the prompt starts with the current
/// `SOUL.md`, that is the part. Otherwise (no `SOUL.md`, or it changed
/// since) the part is everything before the first paragraph Hermes itself
/// writes.
pub fn soul_part<'a>(prompt: &'a str, soul: Option<&str>) -> Option<&'a str> {
    if let Some(soul) = soul.map(str::trim).filter(|s| !s.is_empty())
        && let Some(rest) = prompt.trim_start().strip_prefix(soul)
    {
        let start = prompt.len() - prompt.trim_start().len();
        return Some(&prompt[start..prompt.len() - rest.len()]);
    }
    // Paragraphs as `split_inclusive("\n\n")` gives them (each with the
    // break that ends it), found with memchr's vectorised search.
    let mut end = 0;
    let breaks = memchr::memmem::find_iter(prompt.as_bytes(), b"\n\n").map(|at| at + 2);
    for stop in breaks.chain(std::iter::once(prompt.len())) {
        if stop <= end {
            continue;
        }
        let para = &prompt[end..stop];
        if end > 0
            && HARNESS_OPENINGS
                .iter()
                .any(|o| para.trim_start().starts_with(o))
        {
            break;
        }
        end = stop;
    }
    let part = prompt[..end].trim();
    (!part.is_empty()).then_some(part)
}

/// A user turn and everything up to the next one.
#[derive(Debug)]
pub struct Exchange<'a> {
    pub msgs: &'a [Message],
    /// Why this exchange cannot be a training turn, if it cannot.
    pub problem: Option<Skip>,
    /// When the user spoke.
    pub timestamp: Option<f64>,
}

/// Splits a conversation into exchanges; anything before the first user
/// turn is dropped.
pub fn exchanges(messages: &[Message]) -> Vec<Exchange<'_>> {
    let starts: Vec<usize> = (0..messages.len())
        .filter(|&i| messages[i].role == Role::User)
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(k, &start)| {
            let end = starts.get(k + 1).copied().unwrap_or(messages.len());
            let msgs = &messages[start..end];
            Exchange {
                msgs,
                problem: check(msgs),
                timestamp: msgs[0].timestamp,
            }
        })
        .collect()
}

/// The quality rules a training turn must meet.
fn check(msgs: &[Message]) -> Option<Skip> {
    if msgs.iter().any(|m| m.oversize) {
        return Some(Skip::OversizeMessage);
    }
    if msgs[0].content.trim().is_empty() {
        return Some(Skip::EmptyPrompt);
    }
    let last = msgs.last().expect("an exchange has its user turn");
    if msgs.len() == 1 {
        return Some(Skip::NoReply);
    }
    if !last.is_final_answer() {
        return Some(
            if last.role == Role::Assistant && last.tool_calls.is_empty() {
                Skip::EmptyReply
            } else {
                Skip::IncompleteTurn
            },
        );
    }
    match last.finish_reason.as_deref() {
        Some("length") => return Some(Skip::TruncatedReply),
        Some("error") | Some("content_filter") => return Some(Skip::ErroredReply),
        _ => {}
    }
    // Every call answered exactly once, every result answers a call.
    let mut open: Vec<&str> = Vec::new();
    for m in &msgs[1..] {
        match m.role {
            Role::Assistant => {
                if !open.is_empty() {
                    return Some(Skip::UnansweredToolCall);
                }
                for c in &m.tool_calls {
                    if c.id.is_empty() || c.name.is_empty() {
                        return Some(Skip::BrokenToolCall);
                    }
                    if !c.arguments.is_object() {
                        return Some(if too_deep(&c.arguments) {
                            Skip::ToolArgumentsTooDeep
                        } else {
                            Skip::BadToolArguments
                        });
                    }
                    open.push(&c.id);
                }
            }
            Role::Tool => {
                let id = m.tool_call_id.as_deref().unwrap_or_default();
                match open.iter().position(|o| *o == id) {
                    Some(p) => {
                        open.remove(p);
                    }
                    None => return Some(Skip::OrphanToolResult),
                }
            }
            Role::User => unreachable!("an exchange holds one user turn"),
        }
    }
    None
}

/// Arguments kept as text because they nest deeper than
/// [`crate::content::MAX_ARGUMENTS_DEPTH`] (or the JSON parser's own limit
/// refused them).
fn too_deep(arguments: &Value) -> bool {
    let Some(s) = arguments.as_str() else {
        return false;
    };
    let (mut depth, mut max, mut in_str, mut escaped) = (0usize, 0usize, false, false);
    for b in s.bytes() {
        if in_str {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max > crate::content::MAX_ARGUMENTS_DEPTH
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The persona part by `str::split_inclusive`, the reading
    /// [`soul_part`] must give.
    fn by_split(prompt: &str) -> Option<&str> {
        let mut end = 0;
        for para in prompt.split_inclusive("\n\n") {
            if end > 0
                && HARNESS_OPENINGS
                    .iter()
                    .any(|o| para.trim_start().starts_with(o))
            {
                break;
            }
            end += para.len();
        }
        let part = prompt[..end].trim();
        (!part.is_empty()).then_some(part)
    }

    #[test]
    fn the_persona_part_splits_paragraphs_as_split_inclusive_does() {
        let pieces = [
            "You are Timmy.",
            "\n",
            "\n\n",
            "\n\n\n",
            " ",
            "# Tools",
            "Host: box",
            "Model: m",
            "<memory>",
            "plain words",
            "é",
        ];
        let mut next = crate::hash::test_rng(0x5EED_5011);
        for _ in 0..20_000 {
            let n = (next() % 9) as usize;
            let prompt: String = (0..n)
                .map(|_| pieces[(next() % pieces.len() as u64) as usize])
                .collect();
            assert_eq!(soul_part(&prompt, None), by_split(&prompt), "{prompt:?}");
        }
    }
}
