//! What an incremental run covers, what it leaves pending, and the checks
//! that keep a cumulative output to one state (see `state` for the model).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use serde_json::Value;

use crate::config::ExportConfig;
use crate::exit::{self, Failure};
use crate::format::Exchange;
use crate::hash::stable_hash;
use crate::model::{Message, Origin, Session, SessionMeta};
use crate::output::Written;
use crate::paths::{Dest, Plan};
use crate::select::{Covered, TurnSelection, turn_key};
use crate::source::state_db::StateDb;
use crate::state::{OutputIdentity, Pending, RunState};

/// A turn's identity across stores: its user text and its final answer.
pub fn fingerprint(msgs: &[Message]) -> u64 {
    let mut key = String::new();
    for m in [msgs.first(), msgs.last()].into_iter().flatten() {
        key.push_str(m.content.trim());
        key.push('\u{1}');
    }
    stable_hash(&key)
}

/// A turn's identity within a session without row ids: its fingerprint and
/// how many identical turns came before it.
pub fn identities(exchanges: &[Exchange<'_>]) -> Vec<u64> {
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    exchanges
        .iter()
        .map(|ex| {
            let print = fingerprint(ex.msgs);
            let n = seen.entry(print).or_default();
            *n += 1;
            stable_hash(&format!("{print:016x}:{n}"))
        })
        .collect()
}

/// The session filters, as recorded in the state.
pub fn selection(cfg: &ExportConfig) -> String {
    format!(
        "channels={:?} sources={:?} sessions={:?} models={:?} nexus_prefix={:?}",
        cfg.channels.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        cfg.sources,
        cfg.sessions,
        cfg.models,
        cfg.nexus_prefix
    )
}

/// Whether pending turns in `[first, last]` may fall in the time window.
fn window_may_hold(cfg: &ExportConfig, p: &Pending) -> bool {
    let open = cfg.since.is_none() && cfg.until.is_none();
    (p.untimed && open)
        || match (p.first, p.last) {
            (Some(f), Some(l)) => {
                cfg.since.is_none_or(|s| l >= s) && cfg.until.is_none_or(|u| f < u)
            }
            _ => false,
        }
}

/// Refuses a one-shot export into a directory that holds a cumulative
/// dataset kept with `--state` (it would replace the committed lines).
fn refuse_overwriting_cumulative(dir: &std::path::Path) -> Result<()> {
    let path = dir.join("manifest.json");
    let Ok(Some(bytes)) = crate::safe_io::read_optional(&path, crate::safe_io::MAX_SETTINGS_BYTES)
    else {
        return Ok(());
    };
    let Ok(m) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(());
    };
    let by_flags = m["flags"].as_array().is_some_and(|f| {
        f.iter().any(|a| {
            a.as_str()
                .is_some_and(|a| a == "--state" || a.starts_with("--state="))
        })
    });
    if m["cumulative"] == Value::Bool(true) || by_flags {
        return Err(Failure::new(
            exit::ERROR,
            format!(
                "{} holds a cumulative dataset kept with --state; an export without that --state would replace its committed lines. Nothing was written: export elsewhere, or pass the same --state",
                dir.display()
            ),
        )
        .into());
    }
    Ok(())
}

/// The output identity of this run.
pub fn identity(cfg: &ExportConfig, plan: &Plan) -> OutputIdentity {
    OutputIdentity {
        format: cfg.shape.as_str().to_string(),
        target: if cfg.string_arguments { "openai" } else { "hf" }.to_string(),
        out: plan.out_id.clone(),
        split: crate::output::SPLIT.to_string(),
    }
}

/// Refuses, before anything is written, an output that belongs to another
/// state: a state file recorded for another format, style, target or
/// destination, or a one-shot export into a cumulative directory.
pub fn check_output(
    state: Option<&RunState>,
    plan: &Plan,
    identity: &OutputIdentity,
) -> Result<()> {
    if let (Some(st), Some(path)) = (state, &plan.state)
        && let Some(old) = &st.identity
        && old != identity
    {
        return Err(Failure::new(
            exit::ERROR,
            format!(
                "state file {} belongs to the export {}; this run is {}. Nothing was written: use one state file per output",
                path.display(),
                old.describe(),
                identity.describe()
            ),
        )
        .into());
    }
    if let (None, Dest::Dir(d)) = (state, &plan.dest) {
        refuse_overwriting_cumulative(d)?;
    }
    Ok(())
}

/// The state.db sessions an incremental run reads: those touched since the
/// watermark, and those holding pending turns that this run's filters may
/// now take (sorted by id).
pub fn heads_to_read(
    st: &RunState,
    db: &StateDb,
    cfg: &ExportConfig,
    selection: &str,
) -> Result<Vec<SessionMeta>> {
    let mut heads: BTreeMap<String, SessionMeta> = db
        .touched_since(st.watermark)?
        .into_iter()
        .map(|h| (h.id.clone(), h))
        .collect();
    let selection_changed = st.selection != selection;
    for (id, p) in &st.pending {
        let take = (p.unselected_after.is_some() && selection_changed)
            || (!p.turns.is_empty()
                && p.complete.is_none_or(|c| c >= cfg.min_turns)
                && window_may_hold(cfg, p));
        if take
            && !heads.contains_key(id)
            && let Some(h) = db.root_of(id)?
        {
            heads.insert(h.id.clone(), h);
        }
    }
    Ok(heads.into_values().collect())
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
