//! Incremental-run state (`--state FILE`), the bookkeeping of what a run
//! covers and leaves pending ([`RunCoverage`]), and the lock that keeps two
//! runs from interleaving.
//!
//! The state file is the commit point of a run: outputs are written and
//! renamed into place first, then the state is replaced atomically. It
//! records, for every cumulative output file, its committed byte length,
//! line count and a hash of its committed tail, so a run killed after
//! writing an output but before saving the state is undone (the file is cut
//! back) by the next run, and a file that someone else changed is refused
//! instead of being cut at a byte count that no longer ends a line.
//!
//! Coverage rules (a filter never consumes what it did not export):
//! - `state.db` turns are covered by the watermark (the highest message id
//!   of the snapshot a committed run read), except those listed in
//!   [`Pending`]: turns a filter left out (`--since`, `--until`,
//!   `--min-turns`) and sessions the session filters (`--channel`,
//!   `--source`, `--session`, `--model`) did not select. They stay
//!   exportable by a later run whose filters take them.
//! - Sessions without row ids (response store, session files) are covered by
//!   the identities of their exported turns, so a file rewritten shorter (an
//!   undo) does not hide the turns that follow.
//! - The state belongs to one output (format, style, target, destination);
//!   any other is refused before a byte changes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::format::Exchange;
use crate::model::{Origin, Session};
use crate::output::Written;
use crate::select::{Covered, TurnSelection, turn_key};
use crate::sink::{persist, temp_beside};

/// Version 2: pending turns, turn identities, output identity and tails.
/// Version 3 adds `curation` (fingerprints, forgotten sessions), which an
/// older tool would drop: it refuses version 3, and this one reads version
/// 2 as version 3 without curation memory.
pub const STATE_VERSION: u32 = 3;
/// The oldest version read as is.
const STATE_VERSION_READ: u32 = 2;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunState {
    pub version: u32,
    /// What the cumulative outputs are; `None` until the first commit.
    #[serde(default)]
    pub identity: Option<OutputIdentity>,
    /// The session filters of the last committed run (sessions they left
    /// out are pending; they need a look only when these change).
    #[serde(default)]
    pub selection: String,
    /// Highest `state.db` message id of the snapshot the last committed run
    /// read.
    pub watermark: i64,
    /// `state.db` sessions with turns at or below the watermark that no
    /// committed run exported.
    #[serde(default)]
    pub pending: BTreeMap<String, Pending>,
    /// Sessions without row ids (response store, session files): the
    /// identities of the turns already covered, sorted.
    #[serde(default)]
    pub covered_turns: BTreeMap<String, Vec<u64>>,
    /// Each cumulative output file as committed (by file name).
    #[serde(default)]
    pub outputs: BTreeMap<String, Committed>,
    /// Sessions moved to valid.jsonl to give it a full batch; they stay there.
    #[serde(default)]
    pub forced_valid: Vec<String>,
    /// Sessions moved to train.jsonl so that it is not empty; they stay there.
    #[serde(default)]
    pub forced_train: Vec<String>,
    /// Successful runs so far.
    #[serde(default)]
    pub runs: u64,
    /// Duplicate fingerprints and forgotten sessions (see `curate`).
    #[serde(default, skip_serializing_if = "crate::curate::Memory::is_empty")]
    pub curation: crate::curate::Memory,
}

/// The identity of a cumulative output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutputIdentity {
    /// `sft`, `dpo` or `dpo-flat`.
    pub format: String,
    /// `hf` or `openai` (tool-call arguments as objects or strings).
    pub target: String,
    /// `-`, or the absolute path of the file or directory.
    pub out: String,
    /// How sessions are split between train and valid.
    pub split: String,
}

impl OutputIdentity {
    pub fn describe(&self) -> String {
        format!(
            "{} ({} arguments) into {}",
            self.format,
            self.target,
            if self.out == "-" { "stdout" } else { &self.out }
        )
    }
}

/// A cumulative output file as the last committed run left it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Committed {
    pub bytes: u64,
    pub lines: u64,
    /// Hash of the last (at most [`TAIL_BYTES`]) committed bytes.
    pub tail: String,
}

/// Bytes at the end of a committed output that are hashed.
pub const TAIL_BYTES: u64 = 4096;

/// What a `state.db` session still holds for a later run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Pending {
    /// The session filters left the session out: every turn whose rows go
    /// past this message id is still to export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unselected_after: Option<i64>,
    /// Turns a turn filter left out, as runs of consecutive turns given by
    /// the message ids of their first and last user rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub turns: Vec<(i64, i64)>,
    /// Time range of those turns (when the user spoke).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<f64>,
    /// Some of those turns have no time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub untimed: bool,
    /// Complete turns the session had when `--min-turns` left it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete: Option<usize>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.unselected_after.is_none() && self.turns.is_empty()
    }

    /// Whether the turn whose first user row is `key` is listed.
    pub fn has_turn(&self, key: i64) -> bool {
        self.turns.iter().any(|(a, b)| (*a..=*b).contains(&key))
    }

    /// Adds a turn (keys arrive in increasing order).
    pub fn add_turn(&mut self, key: i64, time: Option<f64>, extend: bool) {
        match self.turns.last_mut() {
            Some(run) if extend && run.1 < key => run.1 = key,
            _ => self.turns.push((key, key)),
        }
        match time {
            Some(t) => {
                self.first = Some(self.first.map_or(t, |f| f.min(t)));
                self.last = Some(self.last.map_or(t, |l| l.max(t)));
            }
            None => self.untimed = true,
        }
    }

    /// Merges what another part of the same session left pending.
    pub fn merge(&mut self, other: Pending) {
        self.unselected_after = match (self.unselected_after, other.unselected_after) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.turns.extend(other.turns);
        self.turns.sort_unstable();
        self.first = [self.first, other.first]
            .into_iter()
            .flatten()
            .reduce(f64::min);
        self.last = [self.last, other.last]
            .into_iter()
            .flatten()
            .reduce(f64::max);
        self.untimed |= other.untimed;
        self.complete = match (self.complete, other.complete) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

impl RunState {
    pub fn load(path: &Path) -> Result<RunState> {
        let bytes = match crate::safe_io::read_optional(path, crate::safe_io::MAX_STATE_BYTES) {
            Ok(Some(b)) => b,
            Ok(None) => {
                return Ok(RunState {
                    version: STATE_VERSION,
                    ..RunState::default()
                });
            }
            Err(e) => {
                return Err(e).with_context(|| format!("reading state file {}", path.display()));
            }
        };
        #[derive(Deserialize)]
        struct Version {
            version: Option<u32>,
        }
        let version = serde_json::from_slice::<Version>(&bytes)
            .ok()
            .and_then(|v| v.version);
        match version {
            Some(STATE_VERSION_READ..=STATE_VERSION) => {}
            Some(v) if v < STATE_VERSION_READ => bail!(
                "state file {} was written by an earlier hermes-harvest (state version {v}), whose coverage cannot be carried over safely; move it and its output directory away and run again to start a fresh cumulative export (everything is exported once more)",
                path.display()
            ),
            Some(v) => bail!(
                "state file {} has version {v}, newer than this tool's {STATE_VERSION}; use the newer hermes-harvest",
                path.display()
            ),
            None => {}
        }
        let mut st: RunState = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "state file {} is not valid; move it away to start over (everything will be exported again)",
                path.display()
            )
        })?;
        st.version = STATE_VERSION;
        Ok(st)
    }

    /// Replaces the state file atomically (owner-only permissions).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tmp = temp_beside(path)?;
        serde_json::to_writer(&mut tmp, self)?;
        tmp.write_all(b"\n")?;
        persist(tmp, path)
    }
}

/// What one run covered and left pending.
#[derive(Debug, Default)]
pub struct RunCoverage {
    /// Sessions without row ids: identities of the turns this run covered.
    pub covered: BTreeMap<String, Vec<u64>>,
    /// state.db sessions with a pending entry that this run read (the entry
    /// is replaced), and what the sessions read leave pending (turns a
    /// filter left out).
    pub read_db: BTreeSet<String>,
    pub pending: BTreeMap<String, Pending>,
    /// state.db sessions the session filters left out in this run.
    pub unselected: Vec<String>,
}

impl RunCoverage {
    /// Records what this run did with the turns of one session. A turn is
    /// covered once a run selected it; one a filter left out stays pending
    /// for a later run (never consumed by what was not exported).
    pub fn record_session(
        &mut self,
        covered: &Covered<'_>,
        session: &Session,
        exchanges: &[Exchange<'_>],
        sel: &TurnSelection,
    ) {
        if covered.state.is_none() {
            return;
        }
        if session.origin != Some(Origin::StateDb) {
            for (i, ident) in sel.idents.iter().enumerate() {
                if sel.selected[i] && !sel.too_few {
                    self.covered
                        .entry(session.id.clone())
                        .or_default()
                        .push(*ident);
                }
            }
            return;
        }
        let context_upto = session.resume_after.unwrap_or(0);
        let mut left = Pending::default();
        let mut extend = false;
        for (i, ex) in exchanges.iter().enumerate() {
            let consumed = sel.selected[i] && !sel.too_few;
            match turn_key(ex.msgs) {
                Some(key) if key > context_upto && sel.fresh[i] && !consumed => {
                    left.add_turn(key, ex.timestamp.or(session.started_at), extend);
                    extend = true;
                }
                _ => extend = false,
            }
        }
        if sel.too_few && !left.turns.is_empty() {
            left.complete = Some(sel.complete);
        }
        let pending = covered.state.and_then(|s| s.pending.get(&session.id));
        if pending.is_some() {
            // Its old entry is replaced by what this run leaves.
            self.read_db.insert(session.id.clone());
        }
        if !left.is_empty() {
            self.pending
                .entry(session.id.clone())
                .or_default()
                .merge(left);
        }
    }

    /// Folds this run into the state; true when the state file must be
    /// written (something changed, or outputs were committed).
    pub fn commit(
        self,
        st: &mut RunState,
        written: Option<&Written>,
        top: i64,
        selection: String,
        identity: OutputIdentity,
    ) -> bool {
        let before = st.clone();
        let previous = st.watermark;
        for id in &self.read_db {
            st.pending.remove(id);
        }
        for (id, p) in self.pending {
            st.pending.entry(id).or_default().merge(p);
        }
        for id in self.unselected {
            let p = st.pending.entry(id).or_default();
            p.unselected_after = Some(p.unselected_after.map_or(previous, |a| a.min(previous)));
        }
        st.pending.retain(|_, p| !p.is_empty());
        for (id, mut idents) in self.covered {
            let v = st.covered_turns.entry(id).or_default();
            v.append(&mut idents);
            v.sort_unstable();
            v.dedup();
        }
        if let Some(w) = written {
            for (name, committed) in &w.files {
                st.outputs.insert(name.clone(), committed.clone());
            }
            st.forced_valid = w.forced_valid.clone();
            st.forced_train = w.forced_train.clone();
        }
        st.watermark = st.watermark.max(top);
        st.selection = selection;
        st.identity = Some(identity);
        let changed = *st != before || written.is_some_and(|w| !w.files.is_empty());
        if changed {
            st.runs += 1;
        }
        changed
    }
}
