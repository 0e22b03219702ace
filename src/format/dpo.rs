//! DPO lines from the preference signals found while rebuilding (SPEC §4).
//!
//! Conversational (default, TRL / axolotl `chat_template.default`):
//! `{"prompt": [system?, ..., user], "chosen": [...], "rejected": [...]}`.
//! Flat (`--dpo-style flat`, mlx-lm-lora): `{"system", "prompt", "chosen",
//! "rejected"}` strings, single-turn: the prompt is the last user turn and
//! each side is its final answer text, so tool-retry pairs (which have no
//! text) are not written in that style.

use serde::Serialize;

use crate::config::{DpoStyle, ExportConfig};
use crate::format::{OutMsg, approx_text_tokens, approx_tokens, system_text};
use crate::model::{Message, Role, Session};
use crate::rebuild::{Alternative, Rebuilt, Signal};

#[derive(Debug, Clone, Serialize)]
pub struct DpoLine {
    pub prompt: Vec<OutMsg>,
    pub chosen: Vec<OutMsg>,
    pub rejected: Vec<OutMsg>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlatLine {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum PairLine {
    Conversational(DpoLine),
    Flat(FlatLine),
}

#[derive(Debug, Default)]
pub struct DpoOutcome {
    /// Each pair with its signal and the time of its user turn.
    pub lines: Vec<(Signal, PairLine, Option<f64>)>,
    pub skipped: Vec<&'static str>,
}

/// Builds the pairs of one session. `selected(user, chosen_end)` says
/// whether the pair whose prompt ends with `messages[user]` and whose kept
/// branch ends at `chosen_end` is wanted (time window, not yet exported).
pub fn pairs(
    session: &Session,
    rebuilt: &Rebuilt,
    cfg: &ExportConfig,
    selected: &dyn Fn(usize, usize) -> bool,
) -> DpoOutcome {
    let mut out = DpoOutcome::default();
    let msgs = &rebuilt.messages;
    let system = system_text(session, &cfg.system);
    for alt in &rebuilt.alternatives {
        if !cfg.signals.contains(&alt.signal) {
            continue;
        }
        let Some(user) = msgs[..alt.prompt_end]
            .iter()
            .rposition(|m| m.role == Role::User)
        else {
            out.skipped.push("pair_without_prompt");
            continue;
        };
        if !selected(user, alt.chosen_end) {
            continue;
        }
        match build(msgs, user, alt, system.as_deref(), cfg) {
            Ok(line) => out.lines.push((alt.signal, line, msgs[user].timestamp)),
            Err(reason) => out.skipped.push(reason),
        }
    }
    out
}

fn build(
    msgs: &[Message],
    user: usize,
    alt: &Alternative,
    system: Option<&str>,
    cfg: &ExportConfig,
) -> Result<PairLine, &'static str> {
    // The completions start right after the user turn; a tool-retry shares
    // the steps that came before the failed call.
    let shared = &msgs[user + 1..alt.prompt_end];
    let chosen: Vec<&Message> = shared
        .iter()
        .chain(&msgs[alt.prompt_end..alt.chosen_end])
        .collect();
    let rejected: Vec<&Message> = shared.iter().chain(&alt.rejected).collect();
    if chosen.is_empty() || rejected.is_empty() {
        return Err("empty_pair_side");
    }
    if alt.signal != Signal::ToolRetry
        && !(chosen.last().is_some_and(|m| m.is_final_answer())
            && rejected.last().is_some_and(|m| m.is_final_answer()))
    {
        return Err("pair_side_without_answer");
    }
    if chosen.len() == rejected.len() && chosen.iter().zip(&rejected).all(|(a, b)| a.same_turn(b)) {
        return Err("chosen_equals_rejected");
    }
    let side_tokens = chosen
        .iter()
        .map(|m| approx_tokens(m))
        .sum::<usize>()
        .max(rejected.iter().map(|m| approx_tokens(m)).sum());
    let sys_tokens = system.map_or(0, approx_text_tokens);

    match cfg.dpo_style {
        DpoStyle::Flat => {
            if alt.signal == Signal::ToolRetry {
                return Err("tool_pair_in_flat_style");
            }
            let prompt = msgs[user].content.clone();
            let c = chosen.last().expect("checked").content.clone();
            let r = rejected.last().expect("checked").content.clone();
            if c.trim() == r.trim() {
                return Err("chosen_equals_rejected");
            }
            if sys_tokens + approx_text_tokens(&prompt) + side_tokens > cfg.max_tokens {
                return Err("over_token_budget");
            }
            Ok(PairLine::Flat(FlatLine {
                system: system.map(str::to_string),
                prompt,
                chosen: c,
                rejected: r,
            }))
        }
        DpoStyle::Conversational => {
            // Keep as much history as the budget allows, whole exchanges only.
            let mut start = user;
            let history_starts: Vec<usize> =
                (0..user).filter(|&i| msgs[i].role == Role::User).collect();
            let fixed = sys_tokens + approx_tokens(&msgs[user]) + side_tokens;
            if fixed > cfg.max_tokens {
                return Err("over_token_budget");
            }
            let mut budget = cfg.max_tokens - fixed;
            for &s in history_starts.iter().rev() {
                let cost: usize = msgs[s..start].iter().map(approx_tokens).sum();
                if cost > budget || msgs[s..start].last().is_some_and(|m| !m.is_final_answer()) {
                    break;
                }
                budget -= cost;
                start = s;
            }
            let mut prompt = Vec::new();
            if let Some(s) = system {
                prompt.push(OutMsg::text("system", s));
            }
            prompt.extend(
                msgs[start..=user]
                    .iter()
                    .map(|m| OutMsg::from_message(m, cfg)),
            );
            Ok(PairLine::Conversational(DpoLine {
                prompt,
                chosen: chosen
                    .iter()
                    .map(|m| OutMsg::from_message(m, cfg))
                    .collect(),
                rejected: rejected
                    .iter()
                    .map(|m| OutMsg::from_message(m, cfg))
                    .collect(),
            }))
        }
    }
}
