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
use crate::skip::Skip;
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
    /// side's last message, the name of the system prompt it carries, and
    /// the index of its user turn in the messages.
    pub lines: Vec<(Signal, PairLine, Count, usize, Span, &'static str, usize)>,
    pub skipped: Vec<Skip>,
    /// Set when the chat template failed on a pair.
    pub template_error: Option<String>,
}

/// Which pairs are wanted, and where each prompt's unit starts (see
/// [`pairs`]).
pub type Select<'a> = (&'a dyn Fn(usize, usize) -> bool, &'a dyn Fn(usize) -> usize);

/// Builds the pairs of one session. `selected(user, chosen_end)` says
/// whether the pair whose prompt ends with `messages[user]` and whose kept
/// branch ends at `chosen_end` is wanted (time window, not yet exported);
/// `unit_start(user)` is the first message of the split unit of that user
/// turn: the prompt's history never reaches before it (a nexus session's
/// day units). A pair that does not fit with the first of `systems` is
/// tried with the next ones (see [`crate::format::system_chain`]).
pub fn pairs(
    rebuilt: &Rebuilt,
    opts: &FormatOptions,
    systems: &[(&'static str, Option<&str>)],
    tools: &SessionTools,
    fitter: &mut Fitter<'_>,
    (selected, unit_start): Select<'_>,
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
            out.skipped.push(Skip::PairWithoutPrompt);
            continue;
        };
        if !selected(user, alt.chosen_end) {
            continue;
        }
        let failures = fitter.template_failures;
        let mut built = Err(Skip::OverBudget);
        let from = unit_start(user).min(user);
        for &(name, system) in systems {
            let pair = Pair {
                msgs,
                from,
                user,
                alt,
                system,
                opts,
                tools,
            };
            built = pair.build(fitter).map(|(l, c, m)| (l, c, m, name));
            if !matches!(built, Err(Skip::OverBudget)) || fitter.template_failures > failures {
                break;
            }
        }
        match built {
            Ok((line, count, missing, prompt)) => {
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
                    prompt,
                    user,
                ))
            }
            Err(Skip::OverBudget) => out.skipped.push(fitter.reason(failures)),
            Err(reason) => out.skipped.push(reason),
        }
    }
    out.template_error = fitter.template_error.take();
    out
}

struct Pair<'a> {
    msgs: &'a [Message],
    /// The first message the prompt's history may take (its unit's).
    from: usize,
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

/// A conversational pair's prompt as it grows backwards, with the tools it
/// needs and how both sides fit after it.
struct Growing<'c> {
    prompt: Vec<OutMsg>,
    tools: Vec<Value>,
    called: std::collections::BTreeSet<&'c str>,
    missing: usize,
    fit: PairFit,
}

impl Pair<'_> {
    /// Both completions: they start right after the user turn; a tool-retry
    /// shares the steps that came before the failed call.
    fn sides(&self) -> Result<(Vec<&Message>, Vec<&Message>), Skip> {
        let (msgs, user, alt) = (self.msgs, self.user, self.alt);
        let shared = &msgs[user + 1..alt.prompt_end];
        let chosen: Vec<&Message> = shared
            .iter()
            .chain(&msgs[alt.prompt_end..alt.chosen_end])
            .collect();
        let rejected: Vec<&Message> = shared.iter().chain(&alt.rejected).collect();
        if chosen.is_empty() || rejected.is_empty() {
            return Err(Skip::EmptyPairSide);
        }
        if alt.signal != Signal::ToolRetry
            && !(chosen.last().is_some_and(|m| m.is_final_answer())
                && rejected.last().is_some_and(|m| m.is_final_answer()))
        {
            return Err(Skip::PairSideWithoutAnswer);
        }
        if chosen.len() == rejected.len()
            && chosen.iter().zip(&rejected).all(|(a, b)| a.same_turn(b))
        {
            return Err(Skip::ChosenEqualsRejected);
        }
        Ok((chosen, rejected))
    }

    fn build(&self, fitter: &mut Fitter<'_>) -> Result<(PairLine, Count, usize), Skip> {
        let (chosen, rejected) = self.sides()?;
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
        let sides = [chosen.as_slice(), rejected.as_slice()];
        // The rejected side of a tool-retry may call a tool that does not
        // exist: only what the prompt and the chosen side call needs a
        // definition.
        let called: std::collections::BTreeSet<&str> = chosen
            .iter()
            .flat_map(|m| m.tool_calls.iter().map(|c| c.function.name.as_str()))
            .collect();
        let (tools, missing) = self.tools.for_calls(self.opts.tools, &called);
        let prompt = vec![OutMsg::from_message(&self.msgs[self.user], &self.opts.msg)];
        let fit = both_fit(fitter, self.system, &prompt, sides, &tools).ok_or(Skip::OverBudget)?;
        let mut g = Growing {
            prompt,
            tools,
            called,
            missing,
            fit,
        };
        if self.opts.tools == ToolsPolicy::Used && self.opts.distractors > 0 {
            self.add_distractors(fitter, sides, &mut g);
        }
        self.add_history(fitter, sides, &mut g);
        let Growing {
            prompt,
            tools,
            missing,
            fit,
            ..
        } = g;
        let trainable =
            fit.chosen
                .saturating_sub(prompt_tokens(fitter, self.system, &prompt, &tools));
        let count = Count {
            total: fit.total,
            trainable,
            last_turn: trainable,
        };
        let mut full_prompt = Vec::with_capacity(prompt.len() + 1);
        match self.system {
            Some(s) if self.opts.fold_system => full_prompt = crate::format::folded(s, &prompt),
            Some(s) => {
                full_prompt.push(OutMsg::text("system", s));
                full_prompt.extend(prompt);
            }
            None => full_prompt.extend(prompt),
        }
        let line = DpoLine {
            prompt: full_prompt,
            chosen,
            rejected,
            tools,
        };
        Ok((PairLine::Conversational(line), count, missing))
    }

    /// Distractors that fit with the longer side.
    fn add_distractors(&self, fitter: &mut Fitter<'_>, sides: [&[OutMsg]; 2], g: &mut Growing<'_>) {
        let mut all = g.prompt.clone();
        all.extend_from_slice(sides[usize::from(!g.fit.chosen_is_longer)]);
        let before = g.tools.clone();
        let n = self.opts.distractors;
        let (added, _) = fitter.add_distractors(self.tools, &mut g.tools, self.system, &all, n);
        if !added.is_empty() {
            match both_fit(fitter, self.system, &g.prompt, sides, &g.tools) {
                Some(f) => g.fit = f,
                None => g.tools = before,
            }
        }
    }

    /// History before the user turn, inside its unit: whole exchanges,
    /// newest first, each with its long tool results shortened if that
    /// makes it fit.
    fn add_history<'m>(
        &'m self,
        fitter: &mut Fitter<'_>,
        sides: [&[OutMsg]; 2],
        g: &mut Growing<'m>,
    ) {
        let msgs = self.msgs;
        let starts: Vec<usize> = (self.from..self.user)
            .filter(|&i| msgs[i].role == Role::User)
            .collect();
        let mut end = self.user;
        for &s in starts.iter().rev() {
            let exchange = &msgs[s..end];
            if exchange.last().is_some_and(|m| !m.is_final_answer()) {
                break;
            }
            let mut called = g.called.clone();
            called.extend(
                exchange
                    .iter()
                    .flat_map(|m| m.tool_calls.iter().map(|c| c.name.as_str())),
            );
            let (mut tools, missing) = self.tools.for_calls(self.opts.tools, &called);
            if missing > g.missing {
                break;
            }
            for t in &g.tools {
                if !tools.contains(t) {
                    self.tools.insert(&mut tools, t);
                }
            }
            let Some((fit, prompt)) = self.with_exchange(fitter, sides, g, exchange, &tools) else {
                break;
            };
            *g = Growing {
                prompt,
                tools,
                called,
                missing,
                fit,
            };
            end = s;
        }
    }

    /// The prompt with `exchange` before it, if both sides still fit.
    fn with_exchange(
        &self,
        fitter: &mut Fitter<'_>,
        sides: [&[OutMsg]; 2],
        g: &Growing<'_>,
        exchange: &[Message],
        tools: &[Value],
    ) -> Option<(PairFit, Vec<OutMsg>)> {
        let head: Vec<OutMsg> = exchange
            .iter()
            .map(|m| OutMsg::from_message(m, &self.opts.msg))
            .collect();
        let with_head = |head: &[OutMsg]| [head, g.prompt.as_slice()].concat();
        let candidate = with_head(&head);
        if let Some(f) = both_fit(fitter, self.system, &candidate, sides, tools) {
            return Some((f, candidate));
        }
        if !head.iter().any(|m| m.role == "tool") {
            return None;
        }
        // Shorten the exchange's long tool results, measured with the
        // longer side, and try once more.
        let longer = sides[usize::from(!g.fit.chosen_is_longer)];
        let mut all = [candidate.as_slice(), longer].concat();
        let tools_opt = (!tools.is_empty()).then_some(tools);
        fitter.shorten_tool_results(self.system, &mut all, tools_opt);
        let candidate = with_head(&all[..head.len()]);
        both_fit(fitter, self.system, &candidate, sides, tools).map(|f| (f, candidate))
    }

    fn flat(
        &self,
        fitter: &mut Fitter<'_>,
        chosen: &[&Message],
        rejected: &[&Message],
    ) -> Result<(PairLine, Count), Skip> {
        if self.alt.signal == Signal::ToolRetry {
            return Err(Skip::ToolPairInFlatStyle);
        }
        let prompt = self.msgs[self.user].content.clone();
        let c = chosen.last().expect("checked").content.clone();
        let r = rejected.last().expect("checked").content.clone();
        if c.trim() == r.trim() {
            return Err(Skip::ChosenEqualsRejected);
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
        .ok_or(Skip::OverBudget)?;
        let trainable = fit
            .chosen
            .saturating_sub(prompt_tokens(fitter, self.system, &user, &[]));
        let count = Count {
            total: fit.total,
            trainable,
            last_turn: trainable,
        };
        Ok((
            PairLine::Flat(FlatLine {
                system: self
                    .system
                    .filter(|_| !self.opts.fold_system)
                    .map(str::to_string),
                prompt: match self.system {
                    Some(s) if self.opts.fold_system => crate::format::fold_into(s, &prompt),
                    _ => prompt,
                },
                chosen: c,
                rejected: r,
            }),
            count,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::MsgOptions;
    use crate::tokens::Counter;

    fn opts(flat: bool, signals: &[Signal]) -> FormatOptions {
        FormatOptions {
            msg: MsgOptions::default(),
            max_tokens: 2048,
            tools: ToolsPolicy::None,
            distractors: 0,
            sft_context: 0.0,
            signals: signals.to_vec(),
            flat_dpo: flat,
            fold_system: false,
        }
    }

    /// `q0 → a0`, then `q1` answered `old` first and `new` after a
    /// regeneration.
    fn regenerated(old: &str, new: &str) -> Rebuilt {
        let messages = vec![
            Message::new(Role::User, "q0"),
            Message::new(Role::Assistant, "a0"),
            Message::new(Role::User, "q1"),
            Message::new(Role::Assistant, new),
        ];
        Rebuilt {
            messages,
            alternatives: vec![Alternative {
                signal: Signal::Regenerate,
                prompt_end: 3,
                chosen_end: 4,
                rejected: vec![Message::new(Role::Assistant, old)],
            }],
            ..Rebuilt::default()
        }
    }

    fn run(
        rebuilt: &Rebuilt,
        opts: &FormatOptions,
        max_tokens: usize,
        selected: &dyn Fn(usize, usize) -> bool,
    ) -> DpoOutcome {
        run_from(rebuilt, opts, max_tokens, (selected, &|_| 0))
    }

    fn run_from(
        rebuilt: &Rebuilt,
        opts: &FormatOptions,
        max_tokens: usize,
        select: Select<'_>,
    ) -> DpoOutcome {
        let mut counter = Counter::Estimate;
        let mut fitter = Fitter::new(&mut counter, max_tokens);
        pairs(
            rebuilt,
            opts,
            &[("session", Some("be kind"))],
            &SessionTools::default(),
            &mut fitter,
            select,
        )
    }

    fn texts(msgs: &[OutMsg]) -> Vec<String> {
        msgs.iter()
            .map(|m| format!("{}:{}", m.role, m.content.as_deref().unwrap_or("")))
            .collect()
    }

    #[test]
    fn a_regeneration_becomes_a_conversational_pair() {
        let out = run(
            &regenerated("worse", "better"),
            &opts(false, &[Signal::Regenerate]),
            2048,
            &|_, _| true,
        );
        assert!(out.skipped.is_empty(), "{:?}", out.skipped);
        assert_eq!(out.lines.len(), 1);
        let (signal, line, count, missing, _, _, _) = &out.lines[0];
        assert_eq!(*signal, Signal::Regenerate);
        assert_eq!(*missing, 0);
        assert!(count.trainable > 0 && count.trainable < count.total);
        let PairLine::Conversational(line) = line else {
            panic!("conversational expected");
        };
        assert_eq!(
            texts(&line.prompt),
            ["system:be kind", "user:q0", "assistant:a0", "user:q1"]
        );
        assert_eq!(texts(&line.chosen), ["assistant:better"]);
        assert_eq!(texts(&line.rejected), ["assistant:worse"]);
        assert!(line.tools.is_empty());
    }

    #[test]
    fn the_flat_style_keeps_the_last_user_turn_and_the_answers() {
        let out = run(
            &regenerated("worse", "better"),
            &opts(true, &[Signal::Regenerate]),
            2048,
            &|_, _| true,
        );
        let PairLine::Flat(line) = &out.lines[0].1 else {
            panic!("flat expected");
        };
        assert_eq!(line.system.as_deref(), Some("be kind"));
        assert_eq!(
            (
                line.prompt.as_str(),
                line.chosen.as_str(),
                line.rejected.as_str()
            ),
            ("q1", "better", "worse")
        );
    }

    #[test]
    fn pairs_that_teach_nothing_or_are_not_wanted_are_left_out() {
        let same = run(
            &regenerated("same", "same"),
            &opts(false, &[Signal::Regenerate]),
            2048,
            &|_, _| true,
        );
        assert!(same.lines.is_empty());
        assert_eq!(same.skipped, [Skip::ChosenEqualsRejected]);

        let rebuilt = regenerated("worse", "better");
        let other_signal = run(&rebuilt, &opts(false, &[Signal::Rewind]), 2048, &|_, _| {
            true
        });
        assert!(other_signal.lines.is_empty() && other_signal.skipped.is_empty());

        // The selection sees the pair's user turn and the kept branch's end.
        let seen = std::cell::RefCell::new(Vec::new());
        let unselected = run(
            &rebuilt,
            &opts(false, &[Signal::Regenerate]),
            2048,
            &|user, end| {
                seen.borrow_mut().push((user, end));
                false
            },
        );
        assert!(unselected.lines.is_empty() && unselected.skipped.is_empty());
        assert_eq!(*seen.borrow(), [(2, 4)]);
    }

    #[test]
    fn the_prompt_never_reaches_before_its_unit() {
        let rebuilt = regenerated("worse", "better");
        let from_pair = |user: usize| user;
        let out = run_from(
            &rebuilt,
            &opts(false, &[Signal::Regenerate]),
            2048,
            (&|_, _| true, &from_pair),
        );
        let PairLine::Conversational(line) = &out.lines[0].1 else {
            panic!("conversational expected");
        };
        assert_eq!(texts(&line.prompt), ["system:be kind", "user:q1"]);
    }

    #[test]
    fn a_pair_over_the_budget_is_skipped() {
        let long = "word ".repeat(4000);
        let out = run(
            &regenerated(&long, "better"),
            &opts(false, &[Signal::Regenerate]),
            128,
            &|_, _| true,
        );
        assert!(out.lines.is_empty());
        assert_eq!(out.skipped, [Skip::OverBudget]);
    }
}
