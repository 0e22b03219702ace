//! Upgrades keep the promise: the one-time re-check of covered turns.
//!
//! A state records the export rules of the run that last committed it
//! ([`crate::state::RunState::rules`], [`crate::state::EXPORT_RULES`]). A
//! run whose rules are newer than a committed state's (a state of an
//! earlier version has none: 0) re-checks once. It reads every session of
//! the stores it reads, not only those past the watermark, takes the turns
//! earlier runs covered as candidates besides the new ones, and exports a
//! candidate exactly when its training target is not in the cumulative
//! files already ([`Held`], read once from the files themselves):
//! - SFT: a turn is held when a line of its session (`meta.session`, or
//!   the state's index for lines without `meta`) ends one of its exchanges
//!   with the turn's final answer (the exact text, redacted as written),
//!   and the turn's time (its own, else its session's start) lies in the
//!   line's trained span (`meta.first` to `meta.last`, whole seconds), so
//!   a turn that is only another line's context is not held. A line
//!   without times holds its answers at any time.
//! - DPO: a pair is held when a line of its session has the same `chosen`
//!   and `rejected` sides (a pair re-rendered from the same turns is the
//!   same).
//!
//! Lines whose session cannot be told (an earlier version's `--no-meta`
//! lines, without an index) hold their answers for every session. Split
//! units keep their split (the output places a known unit where the state
//! has it). What the re-check adds is counted in the summary and in the
//! manifest (`counts.rechecked`); the state records the new rules in the
//! same commit as the outputs, so a killed re-check is done again by the
//! next run, and a finished one never runs twice. A state whose output is
//! stdout keeps no files to look in: it just records the new rules.
//!
//! Test hook: `HERMES_HARVEST_RULES=<n>` makes the run follow the export
//! rules `n` instead of [`crate::state::EXPORT_RULES`], as an earlier
//! version would (rules 0: tool-using exchanges were not written at
//! default flags, see docs/training.md "Defaults before and after"), and
//! record `n`.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Read};
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::format::Exchange;
use crate::model::Role;
use crate::state::{RunState, TurnSelection};

/// The export rules this run follows (see the module header's test hook).
pub fn rules() -> u32 {
    std::env::var("HERMES_HARVEST_RULES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(crate::state::EXPORT_RULES)
}

/// Rules 0 (an earlier version at default flags): tool-using exchanges are
/// not written (they stay covered, as the old defaults left them).
pub fn follow_old_rules(rules: u32, exchanges: &[Exchange<'_>], sel: &mut TurnSelection) {
    if rules >= 1 {
        return;
    }
    for (i, ex) in exchanges.iter().enumerate() {
        let tools = ex
            .msgs
            .iter()
            .any(|m| m.role == Role::Tool || !m.tool_calls.is_empty());
        if tools {
            sel.selected[i] = false;
        }
    }
}

/// Whether a run over `st` re-checks the covered turns: a committed state
/// whose rules are older than this run's, with files to look in.
pub fn due(st: &RunState, rules: u32) -> bool {
    st.runs > 0 && st.rules < rules && !st.outputs.is_empty()
}

/// What the cumulative files already train on (see the module header),
/// and what the re-check added.
#[derive(Debug, Default)]
pub struct Held {
    /// The rules of the state re-checked.
    pub from: u32,
    /// SFT: per session, the print of each final answer → the trained
    /// spans (first, last) of the lines that end an exchange with it.
    answers: HashMap<String, HashMap<u64, Vec<Span>>>,
    /// DPO: per session, the prints of the pairs' sides.
    pairs: HashMap<String, HashSet<u64>>,
    /// Lines and turns (pairs for DPO) the re-check added.
    pub lines: u64,
    pub turns: u64,
}

type Span = (Option<f64>, Option<f64>);

/// The session key of lines whose session cannot be told.
const ANY: &str = "";

impl Held {
    /// Reads the committed lines of every output file of `st` once.
    pub fn read(st: &RunState, path_of: &dyn Fn(&str) -> PathBuf) -> Result<Held> {
        let mut held = Held {
            from: st.rules,
            ..Held::default()
        };
        for (name, committed) in &st.outputs {
            if !crate::state::plain_name(name) || committed.bytes == 0 {
                continue;
            }
            let path = path_of(name);
            let file = crate::safe_io::open_regular(&path, u64::MAX)
                .with_context(|| format!("re-check: reading {}", path.display()))?;
            let mut reader = std::io::BufReader::with_capacity(1 << 16, file.take(committed.bytes));
            let mut index = st
                .index
                .get(name)
                .into_iter()
                .flatten()
                .flat_map(|(s, n)| std::iter::repeat_n(s.as_str(), *n as usize));
            let mut buf = Vec::new();
            loop {
                buf.clear();
                if reader.read_until(b'\n', &mut buf)? == 0 {
                    break;
                }
                let indexed = index.next();
                let Ok(v) = serde_json::from_slice::<Value>(&buf) else {
                    continue;
                };
                let session = v["meta"]["session"]
                    .as_str()
                    .or(indexed)
                    .unwrap_or(ANY)
                    .to_string();
                held.add_line(session, &v);
            }
        }
        Ok(held)
    }

    fn add_line(&mut self, session: String, v: &Value) {
        if v.get("chosen").is_some() {
            let print = pair_print(&v["chosen"], &v["rejected"]);
            self.pairs.entry(session).or_default().insert(print);
            return;
        }
        let span = (
            meta_time(&v["meta"], "first"),
            meta_time(&v["meta"], "last"),
        );
        let Some(msgs) = v["messages"].as_array() else {
            return;
        };
        let answers = self.answers.entry(session).or_default();
        // The last message before each user turn (and the line's last)
        // ends an exchange.
        let ends = msgs
            .windows(2)
            .filter(|w| w[1]["role"] == "user")
            .map(|w| &w[0])
            .chain(msgs.last());
        for m in ends {
            if m["role"] == "assistant"
                && let Some(text) = m["content"].as_str()
            {
                answers.entry(print(text)).or_default().push(span);
            }
        }
    }

    /// Whether the files hold the final answer `text` of a turn of
    /// `session` at time `t`.
    pub fn holds_answer(&self, session: &str, text: &str, t: Option<f64>) -> bool {
        let p = print(text);
        [session, ANY].iter().any(|s| {
            let spans = self.answers.get(*s).and_then(|a| a.get(&p));
            spans.into_iter().flatten().any(|(first, last)| match t {
                Some(t) => {
                    first.is_none_or(|f| t >= f.floor()) && last.is_none_or(|l| t < l.floor() + 1.0)
                }
                None => true,
            })
        })
    }

    /// Whether the files hold a pair of `session` with these sides.
    pub fn holds_pair(&self, session: &str, chosen: &Value, rejected: &Value) -> bool {
        let p = pair_print(chosen, rejected);
        [session, ANY]
            .iter()
            .any(|s| self.pairs.get(*s).is_some_and(|set| set.contains(&p)))
    }

    /// Adds to `sel` the covered turns of `session` the files do not hold
    /// (marked in `sel.rechecked`): turns in the window, not another
    /// store's copies, not the previous part's rows, for SFT complete ones.
    /// DPO (`sft` false) takes every covered turn: its pairs are told apart
    /// when they are made ([`Held::holds_pair`]).
    pub fn add(
        &self,
        session: &crate::model::Session,
        exchanges: &[Exchange<'_>],
        sel: &mut TurnSelection,
        sft: bool,
    ) {
        let context_upto = session.resume_after.unwrap_or(0);
        sel.rechecked = vec![false; exchanges.len()];
        for (i, ex) in exchanges.iter().enumerate() {
            let earlier_part = crate::state::turn_key(ex.msgs).is_some_and(|k| k <= context_upto);
            if sel.selected[i]
                || sel.fresh[i]
                || sel.copied[i]
                || !sel.usable[i]
                || (sft && ex.problem.is_some())
                || earlier_part
            {
                continue;
            }
            let t = ex.timestamp.or(session.started_at);
            let answer = ex.msgs.last().map_or("", |m| m.content.as_str());
            if sft && self.holds_answer(&session.id, answer, t) {
                continue;
            }
            sel.selected[i] = true;
            sel.rechecked[i] = true;
        }
    }
}

/// The print of a pair's sides.
fn pair_print(chosen: &Value, rejected: &Value) -> u64 {
    let text = format!("{chosen}\u{0}{rejected}");
    crate::hash::fingerprint(text.as_bytes())
}

fn print(text: &str) -> u64 {
    crate::hash::fingerprint(text.as_bytes())
}

/// A time of a line's `meta` (`first`, `last`) in epoch seconds.
fn meta_time(meta: &Value, key: &str) -> Option<f64> {
    meta[key]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp() as f64)
}
