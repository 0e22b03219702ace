//! Curation: what goes into the dataset besides the formatters' rules.
//!
//! - [`meta`]: provenance on every line (`meta`: session, channel, raw
//!   source, first and last turn times, part, signal). Trainers ignore
//!   unknown keys; `--no-meta` and `--target openai` leave it out.
//! - [`dedupe`]: exact duplicate lines (their content after redaction,
//!   `meta` aside) are written once, and exchanges that are the same once
//!   numbers, coordinates and times are masked are capped
//!   (`--near-duplicate-cap`). The state remembers the fingerprints, so
//!   this holds across stores and nightly runs.
//! - [`quality`]: replies shorter than `--min-reply-chars`, sessions that
//!   hold only harness traffic.
//! - [`stats`]: the per-channel (and per-signal) figures `--dry-run` prints.
//!
//! Every line left out here is counted under its [`Skip`] reason, in the
//! summary and in the manifest like every other skip.

pub mod dedupe;
pub mod meta;
pub mod quality;
pub mod stats;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::skip::Skip;

/// Exchanges kept per normalised exchange by default: enough for a turn
/// that recurs with different figures to be learnt, too few for a ticking
/// world to teach repetition.
pub const DEFAULT_NEAR_DUPLICATE_CAP: usize = 3;

/// A line's fingerprint and the near keys it counted, each with its
/// turn's time
/// (whole seconds, [`dedupe::NO_TIME`] for none; see `Memory::line_keys`).
pub type LineKeys = (u64, Vec<(u64, u32)>);

/// What the state remembers for curation (field `curation`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Memory {
    /// Fingerprints of every line written (64-bit, sorted, as one hex
    /// string: 16 characters a line).
    #[serde(
        default,
        with = "dedupe::hex_prints",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub exact: Vec<u64>,
    /// Exchanges written per normalised exchange: 16 hex characters of key
    /// and 8 of count each, sorted by key.
    #[serde(
        default,
        with = "dedupe::hex_counts",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub near: Vec<(u64, u32)>,
    /// The splits each normalised exchange went to (1 train, 2 valid; same
    /// encoding as `near`): a copy in the other split is left out.
    #[serde(
        default,
        with = "dedupe::hex_counts",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub sides: Vec<(u64, u32)>,
    /// The near-duplicate keys each line counted (an SFT line's own
    /// exchanges, a DPO line's pair), each with its turn's time as the
    /// cut-off judges it, by the line's fingerprint (as in `exact`),
    /// sorted: `forget` and retraction give the keys back
    /// ([`dedupe::forget_line`]), and `forget --before` counts the turns
    /// it gives back by their times.
    #[serde(
        default,
        with = "dedupe::hex_line_keys",
        skip_serializing_if = "dedupe::LineKeyTable::is_empty"
    )]
    pub line_keys: dedupe::LineKeyTable,
    /// Exchanges the near-duplicate cap held back (normalised key,
    /// session, turn, time), sorted: when `forget` or retraction removes a
    /// line that counted toward a key, the key's held-back exchanges are
    /// given back to the next export (see [`dedupe::release_held`]), which
    /// judges them under its cap again, as a fresh export without that
    /// line would. Every one is kept (a repeating world holds back a few
    /// hundred a day; each costs about 70 bytes of state).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_back: Vec<dedupe::HeldBack>,
    /// Sessions `forget` removed: never exported again.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub forgotten: BTreeSet<String>,
    /// `forget --before`: no turn before this time (epoch seconds) is
    /// exported again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forgotten_before: Option<f64>,
}

impl Memory {
    pub fn is_empty(&self) -> bool {
        *self == Memory::default()
    }

    /// Whether a session's turns may be exported at all.
    pub fn is_forgotten(&self, session: &str) -> bool {
        self.forgotten.contains(session)
    }
}

/// The memory of a run without a state.
static EMPTY: Memory = Memory {
    exact: Vec::new(),
    near: Vec::new(),
    sides: Vec::new(),
    line_keys: dedupe::LineKeyTable::new(),
    held_back: Vec::new(),
    forgotten: BTreeSet::new(),
    forgotten_before: None,
};

/// Curation settings of one export.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Write `meta` on every line.
    pub meta: bool,
    /// Write exact duplicates once.
    pub dedupe: bool,
    /// Exchanges kept per normalised exchange (0: no cap).
    pub near_cap: usize,
    /// Replies shorter than this (in characters, trimmed) are skipped.
    pub min_reply_chars: usize,
    /// Nothing is written: figures only.
    pub dry_run: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            meta: true,
            dedupe: true,
            near_cap: DEFAULT_NEAR_DUPLICATE_CAP,
            min_reply_chars: 0,
            dry_run: false,
        }
    }
}

/// Whether a turn at time `t` is before the `forget --before` cut-off
/// `cut` (an untimed turn cannot be told to be after it).
pub fn before(cut: Option<f64>, t: Option<f64>) -> bool {
    cut.is_some_and(|b| t.is_none_or(|t| t < b))
}

/// The curation side of one export run.
#[derive(Debug, Default)]
pub struct Curator<'m> {
    pub settings: Settings,
    pub dedupe: dedupe::Dedupe<'m>,
    pub stats: stats::DryRun,
    /// Sessions and the cut-off time `forget` recorded.
    pub forgotten: BTreeSet<String>,
    pub forgotten_before: Option<f64>,
}

impl<'m> Curator<'m> {
    /// Curation over the state's memory (borrowed, not copied: a large
    /// state's holds a few hundred thousand fingerprints).
    pub fn new(settings: Settings, memory: Option<&'m Memory>) -> Curator<'m> {
        let memory = memory.unwrap_or(&EMPTY);
        Curator {
            dedupe: dedupe::Dedupe::new(memory, settings.near_cap),
            settings,
            stats: stats::DryRun::default(),
            forgotten: memory.forgotten.clone(),
            forgotten_before: memory.forgotten_before,
        }
    }

    /// Applies `forget` and the near-duplicate cap to a session's selected
    /// exchanges (unselecting them and marking them never to be context);
    /// false when the whole session is forgotten. Near duplicates are
    /// judged per exchange for SFT; DPO pairs are judged per line.
    pub fn select(
        &mut self,
        session: &str,
        started_at: Option<f64>,
        (exchanges, keys): (&[crate::format::Exchange<'_>], &dedupe::ExchangeKeys),
        (selected, copied): (&mut [bool], &mut [bool]),
        sft: bool,
        report: &mut crate::report::Report,
    ) -> bool {
        if self.forgotten.contains(session) {
            report.skip_n(
                Skip::ForgottenSession,
                selected.iter().filter(|s| **s).count(),
            );
            return false;
        }
        self.dedupe.new_session();
        for (i, ex) in exchanges.iter().enumerate() {
            let before_cut = self.before_cut(ex.timestamp.or(started_at));
            if !selected[i] {
                // A turn before the cut is never context either.
                copied[i] |= before_cut;
                continue;
            }
            let drop = if before_cut {
                Some(Skip::ForgottenSession)
            } else if sft && ex.problem.is_none() {
                let key = keys.get(i, ex.msgs);
                let fits = self.dedupe.reserve(key);
                if !fits {
                    let turn = (crate::model::turn_key(ex.msgs), ex.timestamp);
                    self.dedupe.held_back(key, session, turn);
                }
                (!fits).then_some(Skip::NearDuplicate)
            } else {
                None
            };
            if let Some(why) = drop {
                selected[i] = false;
                copied[i] = true;
                report.skip(why);
            }
        }
        true
    }

    /// A formatted line on its way out: `None` when it is an exact
    /// duplicate (counted), else the line with its `meta` (when meta is
    /// on), its figures added to the dry-run statistics.
    pub fn emit(
        &mut self,
        line: Vec<u8>,
        print: u64,
        meta: &meta::Meta<'_>,
        times: (Option<f64>, Option<f64>),
        count: crate::tokens::Count,
        report: &mut crate::report::Report,
    ) -> serde_json::Result<Option<Vec<u8>>> {
        if !self.dedupe.first_time(print, self.settings.dedupe) {
            report.skip(Skip::DuplicateSample);
            return Ok(None);
        }
        self.stats.add(
            (meta.channel, meta.signal.unwrap_or_default()),
            meta.session,
            times,
            count,
        );
        if !self.settings.meta {
            return Ok(Some(line));
        }
        meta::append(&line, meta).map(Some)
    }

    /// Whether a turn at time `t` is before the `forget --before` cut-off
    /// (untimed turns cannot be told to be after it).
    pub fn before_cut(&self, t: Option<f64>) -> bool {
        before(self.forgotten_before, t)
    }

    /// What the manifest says of curation.
    pub fn manifest(&self) -> CurationDoc {
        CurationDoc {
            meta: self.settings.meta,
            exact_duplicates_dropped: self.dedupe.exact_dropped,
            near_duplicates_dropped: self.dedupe.near_dropped,
            near_duplicate_cap: self.settings.near_cap,
            min_reply_chars: self.settings.min_reply_chars,
            forgotten_sessions: self.forgotten.len(),
            forgotten_before: crate::time::iso_time(self.forgotten_before)
                .as_str()
                .map(str::to_owned),
        }
    }
}

/// The manifest's `curation` section.
#[derive(Debug, Clone, Serialize)]
pub struct CurationDoc {
    pub meta: bool,
    pub exact_duplicates_dropped: usize,
    pub near_duplicates_dropped: usize,
    pub near_duplicate_cap: usize,
    pub min_reply_chars: usize,
    pub forgotten_sessions: usize,
    pub forgotten_before: Option<String>,
}
