//! DPO lines from the preference signals found while rebuilding (`rewind`,
//! `regenerate`, `tool-retry`; see `rebuild`).
//!
//! Conversational (default, TRL / axolotl `chat_template.default`):
//! `{"prompt": [system?, ..., user], "chosen": [...], "rejected": [...]}`.
//! Flat (`--dpo-style flat`, mlx-lm-lora): `{"system", "prompt", "chosen",
//! "rejected"}` strings, single-turn: the prompt is the last user turn and
//! each side is its final answer text, so tool-retry pairs (which have no
//! text) are not written in that style.

use serde::Serialize;
use serde_json::Value;

use crate::format::fit::Fitter;
use crate::format::tools::{SessionTools, ToolsPolicy};
use crate::format::{FormatOptions, OutMsg};
use crate::model::{Message, Role};
use crate::rebuild::{Alternative, Rebuilt, Signal};
use crate::tokens::{Count, Sample};

#[derive(Debug, Clone, Serialize)]
pub struct DpoLine {
    pub prompt: Vec<OutMsg>,
    pub chosen: Vec<OutMsg>,
    pub rejected: Vec<OutMsg>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Value>,
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

/// The times of a pair's user turn and of its chosen side's last message.
pub type Span = (Option<f64>, Option<f64>);

#[derive(Debug, Default)]
pub struct DpoOutcome {
    /// Each pair with its signal, its tokens (the prompt with the longer
    /// side; trainable: the chosen side), how many called tools have no
    /// definition, and the times of its user turn and of the chosen
    /// side's last message.
    pub lines: Vec<(Signal, PairLine, Count, usize, Span)>,
    pub skipped: Vec<&'static str>,
    /// Set when the chat template failed on a pair.
    pub template_error: Option<String>,
}

/// Builds the pairs of one session. `selected(user, chosen_end)` says
/// whether the pair whose prompt ends with `messages[user]` and whose kept
/// branch ends at `chosen_end` is wanted (time window, not yet exported).
pub fn pairs(
    rebuilt: &Rebuilt,
    opts: &FormatOptions,
    system: Option<&str>,
    tools: &SessionTools,
    fitter: &mut Fitter<'_>,
    selected: &dyn Fn(usize, usize) -> bool,
) -> DpoOutcome {
    let mut out = DpoOutcome::default();
    let msgs = &rebuilt.messages;
    for alt in &rebuilt.alternatives {
        if !opts.signals.contains(&alt.signal) {
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
        let pair = Pair {
            msgs,
            user,
            alt,
            system,
            opts,
            tools,
        };
        let failures = fitter.template_failures;
        match pair.build(fitter) {
            Ok((line, count, missing)) => {
                // The pair's time span: its user turn to the chosen side's end.
                let last = msgs[user..alt.chosen_end.max(user + 1)]
                    .iter()
                    .filter_map(|m| m.timestamp)
                    .reduce(f64::max);
                out.lines.push((
                    alt.signal,
                    line,
                    count,
                    missing,
                    (msgs[user].timestamp, last),
                ))
            }
            Err("over_budget") => out.skipped.push(fitter.reason(failures)),
            Err(reason) => out.skipped.push(reason),
        }
    }
    out.template_error = fitter.template_error.take();
    out
}

struct Pair<'a> {
    msgs: &'a [Message],
    user: usize,
    alt: &'a Alternative,
    system: Option<&'a str>,
    opts: &'a FormatOptions,
    tools: &'a SessionTools,
}

/// Tokens of a pair whose both sides fit after the same prompt.
#[derive(Debug, Clone, Copy)]
struct PairFit {
    /// The prompt with the longer side.
    total: usize,
    /// The prompt with the chosen side.
    chosen: usize,
    chosen_is_longer: bool,
}

/// Both sides of a pair after the same prompt, when both fit.
fn both_fit(
    fitter: &mut Fitter<'_>,
    system: Option<&str>,
    prompt: &[OutMsg],
    sides: [&[OutMsg]; 2],
    tools: &[Value],
) -> Option<PairFit> {
    let tools = (!tools.is_empty()).then_some(tools);
    let mut totals = [0; 2];
    for (k, side) in sides.into_iter().enumerate() {
        let mut all = prompt.to_vec();
        all.extend_from_slice(side);
        totals[k] = fitter
            .fits(&Sample {
                system,
                messages: &all,
                tools,
            })?
            .total;
    }
    Some(PairFit {
        total: totals[0].max(totals[1]),
        chosen: totals[0],
        chosen_is_longer: totals[0] >= totals[1],
    })
}

/// Tokens of the prompt alone (to tell the chosen side's own tokens).
fn prompt_tokens(
    fitter: &mut Fitter<'_>,
    system: Option<&str>,
    prompt: &[OutMsg],
    tools: &[Value],
) -> usize {
    fitter
        .count(&Sample {
            system,
            messages: prompt,
            tools: (!tools.is_empty()).then_some(tools),
        })
        .map_or(0, |c| c.total)
}

impl Pair<'_> {
    fn build(&self, fitter: &mut Fitter<'_>) -> Result<(PairLine, Count, usize), &'static str> {
        let (msgs, user, alt) = (self.msgs, self.user, self.alt);
        // The completions start right after the user turn; a tool-retry
        // shares the steps that came before the failed call.
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
        if chosen.len() == rejected.len()
            && chosen.iter().zip(&rejected).all(|(a, b)| a.same_turn(b))
        {
            return Err("chosen_equals_rejected");
        }
        if self.opts.flat_dpo {
            return self
                .flat(fitter, &chosen, &rejected)
                .map(|(line, count)| (line, count, 0));
        }
        let out = |side: &[&Message]| -> Vec<OutMsg> {
            side.iter()
                .map(|m| OutMsg::from_message(m, &self.opts.msg))
                .collect()
        };
        let (chosen, rejected) = (out(&chosen), out(&rejected));
        // The rejected side of a tool-retry may call a tool that does not
        // exist: only what the prompt and the chosen side call needs a
        // definition.
        let mut called: std::collections::BTreeSet<&str> = chosen
            .iter()
            .flat_map(|m| m.tool_calls.iter().map(|c| c.function.name.as_str()))
            .collect();
        let (mut tools, mut missing) = self.tools.for_calls(self.opts.tools, &called);
        let mut prompt = vec![OutMsg::from_message(&msgs[user], &self.opts.msg)];
        let sides = [chosen.as_slice(), rejected.as_slice()];
        let longer = |fit: &PairFit| {
            if fit.chosen_is_longer {
                sides[0]
            } else {
                sides[1]
            }
        };
        let mut fit = both_fit(fitter, self.system, &prompt, sides, &tools).ok_or("over_budget")?;
        if self.opts.tools == ToolsPolicy::Used {
            // Distractors that fit with the longer side.
            let mut all = prompt.clone();
            all.extend_from_slice(longer(&fit));
            let before = tools.clone();
            let (added, _) = fitter.add_distractors(self.tools, &mut tools, self.system, &all);
            if !added.is_empty() {
                match both_fit(fitter, self.system, &prompt, sides, &tools) {
                    Some(f) => fit = f,
                    None => tools = before,
                }
            }
        }
        // History before the user turn: whole exchanges, newest first, each
        // with its long tool results shortened if that makes it fit.
        let starts: Vec<usize> = (0..user).filter(|&i| msgs[i].role == Role::User).collect();
        let mut end = user;
        for &s in starts.iter().rev() {
            let exchange = &msgs[s..end];
            if exchange.last().is_some_and(|m| !m.is_final_answer()) {
                break;
            }
            let mut more_called = called.clone();
            more_called.extend(
                exchange
                    .iter()
                    .flat_map(|m| m.tool_calls.iter().map(|c| c.name.as_str())),
            );
            let (mut more_tools, more_missing) =
                self.tools.for_calls(self.opts.tools, &more_called);
            if more_missing > missing {
                break;
            }
            for t in &tools {
                if !more_tools.contains(t) {
                    self.tools.insert(&mut more_tools, t);
                }
            }
            let head: Vec<OutMsg> = exchange
                .iter()
                .map(|m| OutMsg::from_message(m, &self.opts.msg))
                .collect();
            let with_head = |head: &[OutMsg]| [head, prompt.as_slice()].concat();
            let mut candidate = with_head(&head);
            let mut fitted = both_fit(fitter, self.system, &candidate, sides, &more_tools);
            if fitted.is_none() && head.iter().any(|m| m.role == "tool") {
                // Shorten the exchange's long tool results, measured with the
                // longer side, and try once more.
                let mut all = [candidate.as_slice(), longer(&fit)].concat();
                let tools_opt = (!more_tools.is_empty()).then_some(more_tools.as_slice());
                fitter.shorten_tool_results(self.system, &mut all, tools_opt);
                candidate = with_head(&all[..head.len()]);
                fitted = both_fit(fitter, self.system, &candidate, sides, &more_tools);
            }
            match fitted {
                Some(f) => {
                    fit = f;
                    prompt = candidate;
                    tools = more_tools;
                    called = more_called;
                    missing = more_missing;
                    end = s;
                }
                None => break,
            }
        }
        let count = Count {
            total: fit.total,
            trainable: fit.chosen.saturating_sub(prompt_tokens(
                fitter,
                self.system,
                &prompt,
                &tools,
            )),
        };
        let mut full_prompt = Vec::with_capacity(prompt.len() + 1);
        if let Some(s) = self.system {
            full_prompt.push(OutMsg::text("system", s));
        }
        full_prompt.extend(prompt);
        Ok((
            PairLine::Conversational(DpoLine {
                prompt: full_prompt,
                chosen,
                rejected,
                tools,
            }),
            count,
            missing,
        ))
    }

    fn flat(
        &self,
        fitter: &mut Fitter<'_>,
        chosen: &[&Message],
        rejected: &[&Message],
    ) -> Result<(PairLine, Count), &'static str> {
        if self.alt.signal == Signal::ToolRetry {
            return Err("tool_pair_in_flat_style");
        }
        let prompt = self.msgs[self.user].content.clone();
        let c = chosen.last().expect("checked").content.clone();
        let r = rejected.last().expect("checked").content.clone();
        if c.trim() == r.trim() {
            return Err("chosen_equals_rejected");
        }
        let user = [OutMsg::text("user", prompt.as_str())];
        let fit = both_fit(
            fitter,
            self.system,
            &user,
            [
                &[OutMsg::text("assistant", c.as_str())],
                &[OutMsg::text("assistant", r.as_str())],
            ],
            &[],
        )
        .ok_or("over_budget")?;
        let count = Count {
            total: fit.total,
            trainable: fit
                .chosen
                .saturating_sub(prompt_tokens(fitter, self.system, &user, &[])),
        };
        Ok((
            PairLine::Flat(FlatLine {
                system: self.system.map(str::to_string),
                prompt,
                chosen: c,
                rejected: r,
            }),
            count,
        ))
    }
}
