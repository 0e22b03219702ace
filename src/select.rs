//! Which sessions and turns an export takes.
//!
//! - Sessions, before any message is read: channel, raw source, id,
//!   model and the `--exclude`d listing flags ([`wants`]).
//! - Turns: inside the time window (a turn's own time, else its session's
//!   start); new to the state (state.db turns past the watermark or listed
//!   as pending, other stores' turns by identity); not a copy of a turn
//!   that state.db holds and this run exports (the cross-store dedupe).
//! - `--min-turns` counts a session's complete turns in the window, old and
//!   new, so a session that reaches it exports its pending turns then.

use std::collections::{BTreeMap, HashSet};

use anyhow::Result;

use crate::config::ExportConfig;
use crate::coverage::{fingerprint, identities};
use crate::format::Exchange;
use crate::model::{Channel, Listed, Origin, Session, SessionMeta};
use crate::redact::Redactor;
use crate::report::Report;
use crate::shape::Shape;
use crate::source::Stores;
use crate::source::state_db::StateDb;
use crate::state::{Covered, Pending, RunState, TurnSelection, turn_key};

pub fn channel_of(cfg: &ExportConfig, h: &SessionMeta) -> Channel {
    Channel::of(&h.source, &h.id, h.title.as_deref(), &cfg.nexus_prefix)
}

/// Session-level selection (before any message is read).
pub fn wants(cfg: &ExportConfig, h: &SessionMeta) -> bool {
    (cfg.channels.is_empty() || cfg.channels.contains(&channel_of(cfg, h)))
        && (cfg.sources.is_empty() || cfg.sources.contains(&h.source))
        && (cfg.sessions.is_empty() || cfg.sessions.contains(&h.id))
        && (cfg.models.is_empty() || h.model.as_ref().is_some_and(|m| cfg.models.contains(m)))
        && excluded_by(cfg, h).is_none()
}

/// The first `--exclude` flag the session carries, if any.
pub fn excluded_by(cfg: &ExportConfig, h: &SessionMeta) -> Option<Listed> {
    cfg.exclude.iter().copied().find(|f| h.listing.has(*f))
}

/// Turn-level time window: at or after `since`, before `until`. A turn
/// without a time is in only when there is no window.
pub fn in_window(cfg: &ExportConfig, t: Option<f64>) -> bool {
    match t {
        Some(t) => cfg.since.is_none_or(|s| t >= s) && cfg.until.is_none_or(|u| t < u),
        None => cfg.since.is_none() && cfg.until.is_none(),
    }
}

/// The turns of the state.db sessions seen in this run. Session files can
/// hold the same turns under another id (0.13 writes snapshots for
/// compaction and retry sessions that never reach the DB); those turns are
/// exported once, from state.db.
#[derive(Debug, Default)]
pub struct Dedupe {
    /// Whether any store besides state.db can repeat its turns.
    pub active: bool,
    /// Fingerprints of the turns of the state.db sessions read.
    pub seen: HashSet<u64>,
    /// state.db sessions whose turns are in `seen`.
    pub fingerprinted: HashSet<String>,
}

impl Dedupe {
    /// Puts the turns of the state.db session `id` (a session file can
    /// carry its id, as 0.13's background-review snapshots do) into `seen`
    /// when this run did not read it: an incremental run reads only the
    /// sessions touched since, and the file's copies of turns exported
    /// earlier must not be exported again.
    pub fn fingerprint_db_copy(
        &mut self,
        stores: &Stores,
        id: &str,
        strict: bool,
        report: &mut Report,
        redactor: Option<&mut Redactor>,
    ) -> Result<()> {
        let Some(db) = &stores.state else {
            return Ok(());
        };
        let Some(root) = db.root_of(id)? else {
            return Ok(());
        };
        if !self.fingerprinted.insert(root.id.clone()) {
            return Ok(());
        }
        let mut quiet = Report::new(strict, true);
        let Some(session) = stores.load_session(&root.id, &mut quiet)? else {
            return Ok(());
        };
        report.partial |= quiet.partial;
        let mut rebuilt = crate::rebuild::rebuild(&session);
        if let Some(r) = redactor {
            // The same text as the export sees; these redactions are not counted.
            let counts = r.counts.clone();
            rebuilt.messages.iter_mut().for_each(|m| r.message(m));
            r.counts = counts;
        }
        for ex in crate::format::exchanges(&rebuilt.messages) {
            self.seen.insert(fingerprint(ex.msgs));
        }
        Ok(())
    }
}

/// Selects the turns of `session`. From a state.db session, every turn is
/// fingerprinted for the dedupe; from another store, a turn whose print is
/// known is a copy.
pub fn turns(
    cfg: &ExportConfig,
    covered: &Covered<'_>,
    dedupe: &mut Dedupe,
    session: &Session,
    exchanges: &[Exchange<'_>],
) -> TurnSelection {
    let from_db = session.origin == Some(Origin::StateDb);
    let n = exchanges.len();
    let mut sel = TurnSelection {
        copied: vec![false; n],
        db_copy: vec![false; n],
        fresh: vec![false; n],
        usable: vec![false; n],
        idents: if from_db {
            Vec::new()
        } else {
            identities(exchanges)
        },
        ..TurnSelection::default()
    };
    for (i, ex) in exchanges.iter().enumerate() {
        if dedupe.active {
            let print = fingerprint(ex.msgs);
            if from_db {
                dedupe.fingerprinted.insert(session.id.clone());
                dedupe.seen.insert(print);
            } else if dedupe.seen.contains(&print) {
                sel.db_copy[i] = true;
                sel.copied[i] = true;
                sel.selected.push(false);
                continue;
            }
        }
        sel.fresh[i] = is_new(covered, session, &sel.idents, i, ex);
        sel.usable[i] = in_window(cfg, ex.timestamp.or(session.started_at));
        sel.selected.push(sel.usable[i] && sel.fresh[i]);
    }
    sel.complete = exchanges
        .iter()
        .zip(&sel.usable)
        .filter(|(e, u)| **u && e.problem.is_none())
        .count();
    sel.too_few = cfg.shape == Shape::Sft && sel.complete < cfg.min_turns && sel.any();
    sel
}

/// Whether no committed run covered turn `index`. state.db turns: rows
/// past the watermark, or listed as pending (a filter left them out); rows
/// up to `resume_after` belong to the previous part of a long session and
/// are only context here. Turns recovered from a snapshot have no row id:
/// they predate the compaction, so only a first run takes them. Other
/// sessions: by identity. Either way, a turn `forget --before` gave back
/// (`RunState::reopened`) is new again.
fn is_new(
    covered: &Covered<'_>,
    session: &Session,
    idents: &[u64],
    index: usize,
    ex: &Exchange<'_>,
) -> bool {
    let msgs = ex.msgs;
    let reopened = covered
        .state
        .and_then(|s| s.reopened.get(&session.id))
        .is_some_and(|r| r.holds(ex.timestamp));
    if session.origin != Some(Origin::StateDb) {
        let known = covered.state.and_then(|s| s.covered_turns.get(&session.id));
        return reopened || known.is_none_or(|k| k.binary_search(&idents[index]).is_err());
    }
    let (Some(key), Some(last)) = (turn_key(msgs), msgs.iter().filter_map(|m| m.row_id).max())
    else {
        return covered.watermark == 0;
    };
    let pending = covered.state.and_then(|s| s.pending.get(&session.id));
    key > session.resume_after.unwrap_or(0)
        && (last > covered.watermark
            || reopened
            || pending
                .is_some_and(|p| p.has_turn(key) || p.unselected_after.is_some_and(|a| last > a)))
}

/// The state.db sessions an incremental run reads: those touched since the
/// watermark, those holding pending turns that this run's filters may
/// now take, and those with turns `forget --before` gave back (sorted by
/// id).
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
    let pending = st.pending.iter().filter(|(_, p)| {
        (p.unselected_after.is_some() && selection_changed)
            || (!p.turns.is_empty()
                && p.complete.is_none_or(|c| c >= cfg.min_turns)
                && window_may_hold(cfg, p))
    });
    for id in pending.map(|(id, _)| id).chain(st.reopened.keys()) {
        if !heads.contains_key(id)
            && let Some(h) = db.root_of(id)?
        {
            heads.insert(h.id.clone(), h);
        }
    }
    Ok(heads.into_values().collect())
}

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
