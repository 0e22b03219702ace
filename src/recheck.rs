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

/// What the run's rules and its re-check make of a session's selection,
/// after coverage: the one place both the sink and the workers (which
/// format ahead for the sink's selection) take it from.
pub fn select(
    (rules, recheck): (u32, Option<&Held>),
    cfg: &crate::config::ExportConfig,
    session: &crate::model::Session,
    exchanges: &[Exchange<'_>],
    sel: &mut TurnSelection,
) {
    follow_old_rules(rules, exchanges, sel);
    if let Some(held) = recheck {
        held.add(cfg, session, exchanges, sel);
    }
}

/// Rules 0 (an earlier version at default flags): tool-using exchanges are
/// not written (they stay covered, as the old defaults left them).
fn follow_old_rules(rules: u32, exchanges: &[Exchange<'_>], sel: &mut TurnSelection) {
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
/// and the rules of the state it was read for. Kept lean, as it is read
/// whole before the sessions: 24 bytes per exchange of the files (SFT), 8
/// per pair (DPO).
#[derive(Debug, Default)]
pub struct Held {
    /// The rules of the state re-checked.
    pub from: u32,
    /// SFT: the print of (session, final answer) of each exchange a line
    /// ends, with the line's trained span in whole seconds (`i64::MIN`,
    /// `i64::MAX` when unknown), sorted.
    answers: Vec<(u64, i64, i64)>,
    /// DPO: the prints of (session, the pair's sides), sorted.
    pairs: Vec<u64>,
}

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
                let session = v["meta"]["session"].as_str().or(indexed).unwrap_or(ANY);
                held.add_line(session, &v);
            }
        }
        held.answers.sort_unstable();
        held.pairs.sort_unstable();
        Ok(held)
    }

    fn add_line(&mut self, session: &str, v: &Value) {
        if v.get("chosen").is_some() {
            self.pairs
                .push(pair_print(session, &v["chosen"], &v["rejected"]));
            return;
        }
        let first = meta_time(&v["meta"], "first").unwrap_or(i64::MIN);
        let last = meta_time(&v["meta"], "last").unwrap_or(i64::MAX);
        let Some(msgs) = v["messages"].as_array() else {
            return;
        };
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
                self.answers
                    .push((answer_print(session, text), first, last));
            }
        }
    }

    /// Whether the files hold the final answer `text` of a turn of
    /// `session` at time `t` (a line's span is in whole seconds).
    pub fn holds_answer(&self, session: &str, text: &str, t: Option<f64>) -> bool {
        [session, ANY].iter().any(|s| {
            let p = answer_print(s, text);
            let from = self.answers.partition_point(|a| a.0 < p);
            self.answers[from..]
                .iter()
                .take_while(|a| a.0 == p)
                .any(|(_, first, last)| {
                    t.is_none_or(|t| {
                        let t = t.floor() as i64;
                        *first <= t && t <= *last
                    })
                })
        })
    }

    /// Whether the files hold a pair of `session` with these sides.
    pub fn holds_pair(&self, session: &str, chosen: &Value, rejected: &Value) -> bool {
        [session, ANY].iter().any(|s| {
            self.pairs
                .binary_search(&pair_print(s, chosen, rejected))
                .is_ok()
        })
    }

    /// Adds to `sel` the covered turns of `session` the files do not hold
    /// (marked in `sel.rechecked`): turns in the window, not another
    /// store's copies, not the previous part's rows, for SFT complete ones.
    /// DPO (`sft` false) takes every covered turn: its pairs are told apart
    /// when they are made ([`Held::holds_pair`]).
    pub fn add(
        &self,
        cfg: &crate::config::ExportConfig,
        session: &crate::model::Session,
        exchanges: &[Exchange<'_>],
        sel: &mut TurnSelection,
    ) {
        let sft = cfg.shape == crate::shape::Shape::Sft;
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
        sel.too_few = sft && sel.complete < cfg.min_turns && sel.any();
    }
}

/// The print of a pair's sides in `session`.
fn pair_print(session: &str, chosen: &Value, rejected: &Value) -> u64 {
    let text = format!("{session}\u{0}{chosen}\u{0}{rejected}");
    crate::hash::fingerprint(text.as_bytes())
}

/// The print of a final answer in `session`.
fn answer_print(session: &str, text: &str) -> u64 {
    let mut bytes = Vec::with_capacity(session.len() + 1 + text.len());
    bytes.extend_from_slice(session.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(text.as_bytes());
    crate::hash::fingerprint(&bytes)
}

/// A time of a line's `meta` (`first`, `last`) in whole epoch seconds.
fn meta_time(meta: &Value, key: &str) -> Option<i64> {
    meta[key]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(lines: &[(&str, Value)]) -> Held {
        let mut h = Held::default();
        for (session, v) in lines {
            h.add_line(session, v);
        }
        h.answers.sort_unstable();
        h.pairs.sort_unstable();
        h
    }

    #[test]
    fn an_answer_is_held_inside_its_line_span_only() {
        let line = serde_json::json!({
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "context"},
                {"role": "assistant", "content": "old answer"},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "", "tool_calls": [{}]},
                {"role": "tool", "content": "out"},
                {"role": "assistant", "content": "answer"}
            ],
            "meta": {"session": "s1", "first": "2027-01-01T00:00:10Z", "last": "2027-01-01T00:00:20Z"}
        });
        let h = held(&[("s1", line)]);
        let t0 = chrono::DateTime::parse_from_rfc3339("2027-01-01T00:00:00Z")
            .unwrap()
            .timestamp() as f64;
        assert!(h.holds_answer("s1", "answer", Some(t0 + 10.5)));
        assert!(h.holds_answer("s1", "answer", Some(t0 + 20.9)));
        assert!(h.holds_answer("s1", "answer", None));
        assert!(!h.holds_answer("s1", "answer", Some(t0 + 21.0)));
        assert!(!h.holds_answer("s2", "answer", Some(t0 + 15.0)));
        // Context before the span is not held; a tool call's empty text
        // ends no exchange.
        assert!(!h.holds_answer("s1", "old answer", Some(t0 + 5.0)));
        assert!(!h.holds_answer("s1", "", Some(t0 + 15.0)));
    }

    #[test]
    fn a_line_of_an_unknown_session_holds_for_every_session() {
        let line = serde_json::json!({
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
        });
        let h = held(&[(ANY, line)]);
        assert!(h.holds_answer("any", "a", Some(1.0)));
        assert!(!h.holds_answer("any", "b", Some(1.0)));
    }

    #[test]
    fn a_pair_is_held_by_its_sides_in_its_session() {
        let line = serde_json::json!({
            "prompt": [{"role": "user", "content": "q"}],
            "chosen": [{"role": "assistant", "content": "good"}],
            "rejected": [{"role": "assistant", "content": "bad"}],
            "meta": {"session": "s1"}
        });
        let h = held(&[("s1", line.clone())]);
        assert!(h.holds_pair("s1", &line["chosen"], &line["rejected"]));
        assert!(!h.holds_pair("s1", &line["rejected"], &line["chosen"]));
        assert!(!h.holds_pair("s2", &line["chosen"], &line["rejected"]));
    }
}
