//! SFT lines: `{"messages": [...], "tools": [...]}`.
//!
//! A session's selected exchanges are cut into samples that each fit the
//! token budget as the trainer renders them (system prompt, tool
//! definitions, messages and template tokens together). Each sample
//! starts at a user turn, carries the system prompt, ends with an
//! assistant answer, and never splits a tool-call group (exchanges are
//! never split). An exchange that cannot be trained on, or is not
//! selected, ends the current sample.
//!
//! Filling a sample, in order: its own exchanges (as many as fit); then
//! up to `--distractors` other offered tools;
//! then, for a sample that starts mid-session after turns this run does
//! not write (exported the night before, outside the time window, in an
//! earlier part of a long session), those turns as context, newest first:
//! at most as many exchanges as the sample has of its own, within
//! `--sft-context` of the budget. Trainers that learn every assistant turn
//! train context turns again; this bound keeps a turn from being repeated
//! more often than new turns arrive. One
//! exchange that does not fit on its own gets its long tool results
//! shortened; if it still does not fit it is skipped as `over_budget`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

use serde_json::Value;

use crate::format::fit::Fitter;
use crate::format::tools::{SessionTools, ToolsPolicy};
use crate::format::{Exchange, FormatOptions, OutMsg};
use crate::hash::BuildFast;
use crate::redact::{Counted, Redactor};
use crate::skip::Skip;
use crate::stats_env::Cache;
use crate::tokens::{Count, Estimate, Sample};

/// Exchanges looked back at for context at most.
const CONTEXT_EXCHANGES: usize = 64;

/// A system message: its (redacted) text and its JSON, escaped once, and
/// its tokens once counted.
#[derive(Debug)]
pub struct SystemMsg {
    pub text: String,
    pub json: Box<[u8]>,
    /// Set once, by whichever thread counts it first (the same figure).
    pub tokens: OnceLock<usize>,
}

/// One SFT line, with its token count.
#[derive(Debug, Clone)]
pub struct SftLine {
    pub system: Option<Arc<SystemMsg>>,
    pub messages: Vec<OutMsg>,
    pub tools: Vec<Value>,
    pub count: Count,
    /// Called tools whose definition is nowhere in the home.
    pub missing_tools: usize,
    /// Which prompt of the chain it carries (`session`, `soul`, …).
    pub prompt: &'static str,
    /// The system prompt is written at the start of the first user turn.
    pub fold: bool,
    /// The session's exchanges it trains (not its context): `start..end`.
    pub own: (usize, usize),
}

impl SftLine {
    /// `{"messages":[...],"tools":[...]}` as one JSON line (no newline).
    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(1024);
        out.extend_from_slice(b"{\"messages\":[");
        let mut first = true;
        let folded;
        let mut messages = &self.messages;
        match &self.system {
            Some(system) if self.fold => {
                folded = crate::format::folded(&system.text, &self.messages);
                messages = &folded;
            }
            Some(system) => {
                out.extend_from_slice(&system.json);
                first = false;
            }
            None => {}
        }
        for m in messages {
            if !first {
                out.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut out, m)?;
        }
        out.push(b']');
        if !self.tools.is_empty() {
            out.extend_from_slice(b",\"tools\":");
            serde_json::to_writer(&mut out, &self.tools)?;
        }
        out.push(b'}');
        Ok(out)
    }
}

/// System messages already made, by their text before redaction, with
/// what redacting it counted: a system prompt shared by many sessions is
/// redacted and escaped once.
#[derive(Debug, Default)]
pub struct SystemCache {
    map: HashMap<String, (Arc<SystemMsg>, Counted), BuildFast>,
}

/// Distinct system prompts remembered at most.
const SYSTEM_CACHE_ENTRIES: usize = 1024;

impl SystemCache {
    pub fn get(&mut self, text: &str, redactor: Option<&mut Redactor>) -> Arc<SystemMsg> {
        if let Some((msg, counted)) = self.map.get(text) {
            crate::stats_env::lookup(Cache::SystemPrompts, true);
            if let Some(r) = redactor {
                r.recount(counted);
            }
            return msg.clone();
        }
        crate::stats_env::lookup(Cache::SystemPrompts, false);
        let (redacted, counted) = match redactor {
            Some(r) => r.counted(text),
            None => (None, Vec::new()),
        };
        let text_out = redacted.unwrap_or_else(|| text.to_string());
        let json = serde_json::to_vec(&OutMsg::text("system", text_out.as_str()))
            .expect("a message serializes")
            .into_boxed_slice();
        let msg = Arc::new(SystemMsg {
            text: text_out,
            json,
            tokens: OnceLock::new(),
        });
        if self.map.len() >= SYSTEM_CACHE_ENTRIES {
            self.map.clear();
        }
        self.map.insert(text.to_owned(), (msg.clone(), counted));
        msg
    }
}

/// What one session gave.
#[derive(Debug, Default)]
pub struct SftOutcome {
    /// Each line with the time of its first own user turn and of its last
    /// own message.
    pub lines: Vec<(SftLine, Option<f64>, Option<f64>)>,
    /// Exchanges left out, per reason.
    pub skipped: Vec<Skip>,
    /// Set when the chat template failed on a sample.
    pub template_error: Option<String>,
}

/// The session's exchanges as written, side by side in one list so that
/// consecutive exchanges are one slice.
struct Flat<'e> {
    msgs: Vec<OutMsg>,
    /// Range of each exchange in `msgs` (empty for exchanges not converted).
    ranges: Vec<(usize, usize)>,
    called: Vec<BTreeSet<&'e str>>,
}

impl<'e> Flat<'e> {
    fn new(exchanges: &'e [Exchange<'e>], from: usize, opts: &FormatOptions) -> Flat<'e> {
        let mut msgs = Vec::new();
        let mut ranges = vec![(0, 0); exchanges.len()];
        let mut called = vec![BTreeSet::new(); exchanges.len()];
        for (k, ex) in exchanges.iter().enumerate().skip(from) {
            let start = msgs.len();
            msgs.extend(ex.msgs.iter().map(|m| OutMsg::from_message(m, &opts.msg)));
            ranges[k] = (start, msgs.len());
            called[k] = ex
                .msgs
                .iter()
                .flat_map(|m| m.tool_calls.iter().map(|c| c.name.as_str()))
                .collect();
        }
        Flat {
            msgs,
            ranges,
            called,
        }
    }

    fn slice(&self, a: usize, b: usize) -> &[OutMsg] {
        &self.msgs[self.ranges[a].0..self.ranges[b - 1].1]
    }

    fn called(&self, a: usize, b: usize) -> BTreeSet<&'e str> {
        self.called[a..b].iter().flatten().copied().collect()
    }
}

/// The system prompts a sample may carry, in the order they are tried
/// (see [`crate::format::system_chain`]), each with its name.
pub type Prompts = [Prompt];

/// A system prompt's name and its message (none for `none`).
pub type Prompt = (&'static str, Option<Arc<SystemMsg>>);

/// Cuts the selected exchanges of a session into samples within the
/// budget (see the module documentation). A sample that does not fit with
/// the first prompt of `systems` is tried with the next ones.
pub fn samples(
    exchanges: &[Exchange<'_>],
    selected: &[bool],
    copied: &[bool],
    opts: &FormatOptions,
    systems: &Prompts,
    tools: &SessionTools,
    fitter: &mut Fitter<'_>,
) -> SftOutcome {
    let mut out = SftOutcome::default();
    let Some(first) = selected.iter().position(|s| *s) else {
        return out;
    };
    let flat = Flat::new(exchanges, first.saturating_sub(CONTEXT_EXCHANGES), opts);
    let mut packer = Packer {
        flat: &flat,
        exchanges,
        selected,
        copied,
        opts,
        system_text: None,
        tools,
        fitter,
    };
    let mut i = first;
    while i < exchanges.len() {
        if !selected[i] {
            i += 1;
            continue;
        }
        if let Some(problem) = exchanges[i].problem {
            out.skipped.push(problem);
            i += 1;
            continue;
        }
        let run_end = (i..exchanges.len())
            .find(|&k| !selected[k] || exchanges[k].problem.is_some())
            .unwrap_or(exchanges.len());
        let failures = packer.fitter.template_failures;
        match packer.with_prompts(systems, i, run_end, failures) {
            Ok((line, next, (prompt, system))) => {
                let last = exchanges[i..next]
                    .iter()
                    .flat_map(|e| e.msgs.iter().filter_map(|m| m.timestamp))
                    .reduce(f64::max);
                out.lines.push((
                    SftLine {
                        system: system.clone(),
                        prompt,
                        fold: opts.fold_system,
                        own: (i, next),
                        ..line
                    },
                    exchanges[i].timestamp,
                    last,
                ));
                i = next;
            }
            Err(reason) => {
                out.skipped.push(match reason {
                    Skip::OverBudget => packer.fitter.reason(failures),
                    other => other,
                });
                i += 1;
            }
        }
    }
    out.template_error = packer.fitter.template_error.take();
    out
}

/// The exchanges a sample takes (up to `end`), with their tools, how many
/// called tools lack a definition, and their count.
struct Cut {
    tools: Vec<Value>,
    missing: usize,
    count: Count,
    end: usize,
}

struct Packer<'p, 'e, 'f> {
    flat: &'p Flat<'e>,
    exchanges: &'p [Exchange<'e>],
    selected: &'p [bool],
    /// Exchanges exported from another store's copy: never context.
    copied: &'p [bool],
    opts: &'p FormatOptions,
    system_text: Option<&'p str>,
    tools: &'p SessionTools,
    fitter: &'p mut Fitter<'f>,
}

impl<'p> Packer<'p, '_, '_> {
    /// The sample that starts with exchange `i` under the first prompt of
    /// `systems` it fits with (a template error ends the search).
    fn with_prompts(
        &mut self,
        systems: &'p Prompts,
        i: usize,
        end: usize,
        failures: usize,
    ) -> Result<(SftLine, usize, &'p Prompt), Skip> {
        let mut result = Err(Skip::OverBudget);
        for prompt in systems {
            self.system_text = prompt.1.as_ref().map(|s| s.text.as_str());
            result = self.sample(i, end).map(|(line, next)| (line, next, prompt));
            if !matches!(result, Err(Skip::OverBudget)) || self.fitter.template_failures > failures
            {
                break;
            }
        }
        result
    }

    fn tools_for(&self, a: usize, b: usize) -> (Vec<Value>, usize) {
        self.tools
            .for_calls(self.opts.tools, &self.flat.called(a, b))
    }

    fn fits(&mut self, a: usize, b: usize, tools: &[Value]) -> Option<Count> {
        let sample = Sample {
            system: self.system_text,
            messages: self.flat.slice(a, b),
            tools: (!tools.is_empty()).then_some(tools),
        };
        self.fitter.fits(&sample)
    }

    /// The sample that starts with exchange `i` (of the run ending before
    /// `end`), and the exchange after its last one. Context comes only
    /// from exchanges this run does not write (exported before, outside
    /// the time window, or in an earlier part of a long session), so no
    /// turn is written twice by one run.
    fn sample(&mut self, i: usize, end: usize) -> Result<(SftLine, usize), Skip> {
        let (mut cut, final_known) = match self.own_exchanges(i, end) {
            Ok(found) => found,
            Err(alone) => return alone.map(|line| (*line, i + 1)),
        };
        let j = cut.end;
        // Distractors.
        let mut distractors = Vec::new();
        if self.opts.tools == ToolsPolicy::Used && self.opts.distractors > 0 {
            let (added, last) = self.fitter.add_distractors(
                self.tools,
                &mut cut.tools,
                self.system_text,
                self.flat.slice(i, j),
                self.opts.distractors,
            );
            cut.count = last.unwrap_or(cut.count);
            distractors = added;
        }
        let start = self.add_context(i, &mut cut, &distractors);
        // The chosen sample once more, for its trainable tokens, unless the
        // whole run was counted so and nothing was added to it.
        let messages = self.flat.slice(start, j);
        let unchanged = final_known && start == i && distractors.is_empty();
        let count = if unchanged {
            cut.count
        } else {
            self.fitter
                .count(&Sample {
                    system: self.system_text,
                    messages,
                    tools: (!cut.tools.is_empty()).then_some(&cut.tools),
                })
                .unwrap_or(cut.count)
        };
        Ok((
            SftLine {
                system: None,
                messages: messages.to_vec(),
                tools: cut.tools,
                count,
                missing_tools: cut.missing,
                prompt: "",
                fold: false,
                own: (0, 0),
            },
            j,
        ))
    }

    /// The exchanges from `i` (before `end`) that fit, with their tools and
    /// count, and whether that count is final (the whole run was counted at
    /// once). `Err` when exchange `i` alone does not fit: then its
    /// shortened form, if any.
    fn own_exchanges(
        &mut self,
        i: usize,
        end: usize,
    ) -> Result<(Cut, bool), Result<Box<SftLine>, Skip>> {
        // The whole run often fits: one count instead of one per exchange
        // (tried only when the estimate, never below the real count and
        // rarely above twice it, says it may).
        let (whole_tools, whole_missing) = self.tools_for(i, end);
        let whole = Sample {
            system: self.system_text,
            messages: self.flat.slice(i, end),
            tools: (!whole_tools.is_empty()).then_some(&whole_tools),
        };
        let maybe = Estimate::count(&whole).total <= 2 * self.opts.max_tokens;
        let max = self.opts.max_tokens;
        let first = maybe
            .then(|| self.fitter.count(&whole))
            .flatten()
            .filter(|c| c.total <= max);
        if let Some(count) = first {
            let cut = Cut {
                tools: whole_tools,
                missing: whole_missing,
                count,
                end,
            };
            return Ok((cut, true));
        }
        let (tools, missing) = self.tools_for(i, i + 1);
        let Some(count) = self.fits(i, i + 1, &tools) else {
            return Err(self.shortened(i, &tools, missing).map(Box::new));
        };
        let mut cut = Cut {
            tools,
            missing,
            count,
            end: i + 1,
        };
        // Own exchanges, as many as fit.
        while cut.end < end {
            let (more, more_missing) = self.tools_for(i, cut.end + 1);
            let Some(c) = self.fits(i, cut.end + 1, &more) else {
                break;
            };
            cut = Cut {
                tools: more,
                missing: more_missing,
                count: c,
                end: cut.end + 1,
            };
        }
        Ok((cut, false))
    }

    /// Context before a mid-session start at `i`; returns the sample's
    /// first exchange.
    fn add_context(&mut self, i: usize, cut: &mut Cut, distractors: &[Value]) -> usize {
        let j = cut.end;
        let own = cut.count.total;
        let context_budget = self.opts.sft_context * self.opts.max_tokens as f64;
        let mut start = i;
        while start > 0
            && i - start < j - i
            && !self.selected[start - 1]
            && !self.copied[start - 1]
            && i - start < CONTEXT_EXCHANGES
            && self.exchanges[start - 1].problem.is_none()
        {
            let (mut more, more_missing) = self.tools_for(start - 1, j);
            if more_missing > cut.missing {
                break;
            }
            for d in distractors {
                if !more.contains(d) {
                    self.tools.insert(&mut more, d);
                }
            }
            match self.fits(start - 1, j, &more) {
                Some(c) if (c.total - own) as f64 <= context_budget => {
                    cut.count = c;
                    cut.tools = more;
                    start -= 1;
                }
                _ => break,
            }
        }
        start
    }

    /// Exchange `i` alone with its long tool results shortened, if that fits.
    fn shortened(
        &mut self,
        i: usize,
        tools: &[Value],
        missing_tools: usize,
    ) -> Result<SftLine, Skip> {
        let mut messages = self.flat.slice(i, i + 1).to_vec();
        let count = self
            .fitter
            .shorten_tool_results(
                self.system_text,
                &mut messages,
                (!tools.is_empty()).then_some(tools),
            )
            .ok_or(Skip::OverBudget)?;
        Ok(SftLine {
            system: None,
            messages,
            tools: tools.to_vec(),
            count,
            missing_tools,
            prompt: "",
            fold: false,
            own: (0, 0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::MsgOptions;
    use crate::model::{Message, Role};
    use crate::rebuild::Signal;
    use crate::tokens::Counter;

    fn opts(max_tokens: usize) -> FormatOptions {
        FormatOptions {
            msg: MsgOptions::default(),
            max_tokens,
            tools: ToolsPolicy::None,
            distractors: 0,
            sft_context: 0.0,
            signals: vec![Signal::Rewind],
            flat_dpo: false,
            fold_system: false,
        }
    }

    /// `n` exchanges `q{k}` → `a{k}`; `broken` ones get no reply.
    fn conversation(n: usize, broken: &[usize]) -> Vec<Message> {
        let mut msgs = Vec::new();
        for k in 0..n {
            msgs.push(Message::new(Role::User, format!("q{k}")));
            if !broken.contains(&k) {
                msgs.push(Message::new(Role::Assistant, format!("a{k}")));
            }
        }
        msgs
    }

    fn texts(line: &SftLine) -> Vec<String> {
        line.messages
            .iter()
            .map(|m| format!("{}:{}", m.role, m.content.as_deref().unwrap_or("")))
            .collect()
    }

    fn run(msgs: &[Message], selected: &[bool], max_tokens: usize) -> SftOutcome {
        let exchanges = crate::format::exchanges(msgs);
        let copied = vec![false; exchanges.len()];
        let system = SystemCache::default().get("be kind", None);
        let mut counter = Counter::Estimate;
        let mut fitter = Fitter::new(&mut counter, max_tokens);
        samples(
            &exchanges,
            selected,
            &copied,
            &opts(max_tokens),
            &[("session", Some(system))],
            &SessionTools::default(),
            &mut fitter,
        )
    }

    #[test]
    fn consecutive_selected_exchanges_share_one_sample_with_the_system_prompt() {
        let out = run(&conversation(2, &[]), &[true, true], 2048);
        assert!(out.skipped.is_empty(), "{:?}", out.skipped);
        assert_eq!(out.lines.len(), 1);
        let line = &out.lines[0].0;
        assert_eq!(
            texts(line),
            ["user:q0", "assistant:a0", "user:q1", "assistant:a1"]
        );
        assert_eq!(line.system.as_ref().unwrap().text, "be kind");
        assert!(line.count.total > 0 && line.count.trainable < line.count.total);
        let json: serde_json::Value = serde_json::from_slice(&line.to_json().unwrap()).unwrap();
        assert_eq!(json["messages"][0]["role"], "system");
        assert_eq!(json["messages"][4]["content"], "a1");
    }

    #[test]
    fn an_unselected_exchange_ends_the_sample_and_is_not_written() {
        let out = run(&conversation(3, &[]), &[true, false, true], 2048);
        let lines: Vec<Vec<String>> = out.lines.iter().map(|(l, _, _)| texts(l)).collect();
        assert_eq!(
            lines,
            [["user:q0", "assistant:a0"], ["user:q2", "assistant:a2"]]
        );
    }

    #[test]
    fn a_turn_that_cannot_be_trained_on_is_skipped_with_its_reason() {
        let out = run(&conversation(3, &[1]), &[true, true, true], 2048);
        assert_eq!(out.skipped, [Skip::NoReply]);
        let lines: Vec<Vec<String>> = out.lines.iter().map(|(l, _, _)| texts(l)).collect();
        assert_eq!(
            lines,
            [["user:q0", "assistant:a0"], ["user:q2", "assistant:a2"]]
        );
    }

    #[test]
    fn an_exchange_over_the_budget_is_skipped_and_the_rest_still_fit() {
        let mut msgs = conversation(2, &[]);
        msgs[1].content = "word ".repeat(4000);
        let out = run(&msgs, &[true, true], 256);
        assert_eq!(out.skipped, [Skip::OverBudget]);
        assert_eq!(out.lines.len(), 1);
        assert_eq!(texts(&out.lines[0].0), ["user:q1", "assistant:a1"]);
        assert!(out.lines[0].0.count.total <= 256);
    }

    #[test]
    fn the_budget_cuts_a_long_run_into_samples_that_each_fit() {
        let mut msgs = conversation(12, &[]);
        for m in msgs.iter_mut().filter(|m| m.role == Role::Assistant) {
            m.content = format!("{} {}", m.content, "some words ".repeat(30));
        }
        let out = run(&msgs, &[true; 12], 320);
        assert!(out.skipped.is_empty(), "{:?}", out.skipped);
        assert!(out.lines.len() > 1, "{} samples", out.lines.len());
        let mut users = Vec::new();
        for (line, _, _) in &out.lines {
            assert!(line.count.total <= 320, "{}", line.count.total);
            assert_eq!(line.messages[0].role, "user");
            assert_eq!(line.messages.last().unwrap().role, "assistant");
            users.extend(
                line.messages
                    .iter()
                    .filter(|m| m.role == "user")
                    .map(|m| m.content.clone()),
            );
        }
        let want: Vec<Option<String>> = (0..12).map(|k| Some(format!("q{k}"))).collect();
        assert_eq!(users, want, "every exchange once, in order");
    }
}
