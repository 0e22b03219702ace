//! SFT lines: `{"messages": [...], "tools": [...]}` (SPEC §4).

use std::collections::HashMap;
use std::rc::Rc;

use crate::config::ExportConfig;
use crate::format::{Exchange, OutMsg, approx_text_tokens, system_text};
use crate::model::Session;
use crate::redact::{Counted, Redactor};
use crate::sampled_hash::BuildSampled;

/// One SFT line. The system message and the tools are kept as their JSON:
/// they repeat in every sample of a session (and the prompt across many
/// sessions), so they are escaped once.
#[derive(Debug, Clone)]
pub struct SftLine {
    pub system: Option<Rc<[u8]>>,
    pub messages: Vec<OutMsg>,
    pub tools: Option<Rc<[u8]>>,
}

impl SftLine {
    /// `{"messages":[...],"tools":[...]}` as one JSON line (no newline).
    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(1024);
        out.extend_from_slice(b"{\"messages\":[");
        let mut first = true;
        if let Some(system) = &self.system {
            out.extend_from_slice(system);
            first = false;
        }
        for m in &self.messages {
            if !first {
                out.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut out, m)?;
        }
        out.push(b']');
        if let Some(tools) = &self.tools {
            out.extend_from_slice(b",\"tools\":");
            out.extend_from_slice(tools);
        }
        out.push(b'}');
        Ok(out)
    }
}

/// The JSON of system messages already written, by their text before
/// redaction, with what redacting it counted: a system prompt shared by
/// many sessions is redacted and escaped once.
#[derive(Debug, Default)]
pub struct SystemCache {
    map: HashMap<String, (Rc<[u8]>, Counted), BuildSampled>,
}

/// Distinct system prompts remembered at most.
const SYSTEM_CACHE_ENTRIES: usize = 1024;

impl SystemCache {
    fn get(&mut self, text: &str, redactor: Option<&mut Redactor>) -> Rc<[u8]> {
        if let Some((json, counted)) = self.map.get(text) {
            if let Some(r) = redactor {
                r.recount(counted);
            }
            return json.clone();
        }
        let (redacted, counted) = match redactor {
            Some(r) => r.counted(text),
            None => (None, Vec::new()),
        };
        let json: Rc<[u8]> =
            serde_json::to_vec(&OutMsg::text("system", redacted.as_deref().unwrap_or(text)))
                .expect("a message serializes")
                .into();
        if self.map.len() >= SYSTEM_CACHE_ENTRIES {
            self.map.clear();
        }
        self.map.insert(text.to_owned(), (json.clone(), counted));
        json
    }
}

/// What one session gave.
#[derive(Debug, Default)]
pub struct SftOutcome {
    /// Each line with the time of its first user turn.
    pub lines: Vec<(SftLine, Option<f64>)>,
    /// Exchanges left out, per reason.
    pub skipped: Vec<&'static str>,
}

/// Cuts the selected exchanges of a session into samples within the token
/// budget. Each sample starts at a user turn, carries the system prompt,
/// and ends with an assistant answer; a tool-call group is never split
/// because exchanges are never split. An exchange that cannot be trained
/// on, or falls outside the time window, ends the current sample.
pub fn samples(
    session: &Session,
    exchanges: &[Exchange<'_>],
    selected: &[bool],
    cfg: &ExportConfig,
    cache: &mut SystemCache,
    redactor: Option<&mut Redactor>,
) -> SftOutcome {
    let mut out = SftOutcome::default();
    let system = system_text(session, &cfg.system);
    let sys_tokens = system.as_deref().map_or(0, approx_text_tokens);
    let system_json = system.as_deref().map(|s| cache.get(s, redactor));
    let tools_json: Option<Rc<[u8]>> = session
        .tools
        .as_ref()
        .map(|t| serde_json::to_vec(t).expect("JSON values serialize").into());
    let mut current: Vec<&Exchange<'_>> = Vec::new();
    let mut tokens = sys_tokens;
    let flush = |current: &mut Vec<&Exchange<'_>>, out: &mut SftOutcome| {
        if current.is_empty() {
            return;
        }
        let t = current[0].timestamp;
        let mut messages = Vec::new();
        for ex in current.drain(..) {
            messages.extend(ex.msgs.iter().map(|m| OutMsg::from_message(m, cfg)));
        }
        out.lines.push((
            SftLine {
                system: system_json.clone(),
                messages,
                tools: tools_json.clone(),
            },
            t,
        ));
    };
    for (ex, &sel) in exchanges.iter().zip(selected) {
        if !sel {
            flush(&mut current, &mut out);
            tokens = sys_tokens;
            continue;
        }
        if let Some(problem) = ex.problem {
            out.skipped.push(problem);
            flush(&mut current, &mut out);
            tokens = sys_tokens;
            continue;
        }
        if sys_tokens + ex.tokens > cfg.max_tokens {
            out.skipped.push("over_token_budget");
            flush(&mut current, &mut out);
            tokens = sys_tokens;
            continue;
        }
        if tokens + ex.tokens > cfg.max_tokens {
            flush(&mut current, &mut out);
            tokens = sys_tokens;
        }
        tokens += ex.tokens;
        current.push(ex);
    }
    flush(&mut current, &mut out);
    out
}
