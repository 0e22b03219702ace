//! SFT lines: `{"messages": [...], "tools": [...]}` (SPEC §4).

use serde::Serialize;
use serde_json::Value;

use crate::config::ExportConfig;
use crate::format::{Exchange, OutMsg, approx_text_tokens, system_text};
use crate::model::Session;

#[derive(Debug, Clone, Serialize)]
pub struct SftLine {
    pub messages: Vec<OutMsg>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
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
) -> SftOutcome {
    let mut out = SftOutcome::default();
    let system = system_text(session, &cfg.system);
    let sys_tokens = system.as_deref().map_or(0, approx_text_tokens);
    let mut current: Vec<&Exchange<'_>> = Vec::new();
    let mut tokens = sys_tokens;
    let flush = |current: &mut Vec<&Exchange<'_>>, out: &mut SftOutcome| {
        if current.is_empty() {
            return;
        }
        let t = current[0].timestamp;
        let mut messages = Vec::new();
        if let Some(s) = &system {
            messages.push(OutMsg::text("system", s.clone()));
        }
        for ex in current.drain(..) {
            messages.extend(ex.msgs.iter().map(|m| OutMsg::from_message(m, cfg)));
        }
        out.lines.push((
            SftLine {
                messages,
                tools: session.tools.clone(),
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
