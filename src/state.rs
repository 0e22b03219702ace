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
//! Crash safety, the first night included:
//! - Claim before the first byte: a run that is about to write a file the
//!   state does not list yet (the first night, a new split file) first
//!   saves the state with that file committed at 0 bytes ([`RunState::claim`]).
//!   A kill at any later point leaves a file the next run recognises and
//!   cuts back; only a file that held bytes before the claim (someone
//!   else's) is refused.
//! - Rewrites (`forget`) are a two-phase commit through a journal: the new
//!   contents are written and synced to staged files beside the targets
//!   (`.hermes-harvest-staged-<name>`), then the state is saved with the
//!   journal (each staged file and what it holds), then the staged files
//!   are renamed over the targets, then the state is saved with the new
//!   committed figures and no journal. Every run and every `forget` first
//!   finishes a journal it finds ([`finish_journal`]): a staged file still
//!   there is renamed into place, one already renamed is checked against
//!   the journal. A kill at any point is thus finished by the next command.
//!
//! Coverage rules (a filter never consumes what it did not export):
//! - `state.db` turns are covered by the watermark (the highest message id
//!   of the snapshot a committed run read), except those listed in
//!   [`Pending`]: turns a filter left out (`--since`, `--until`,
//!   `--min-turns`), sessions the session filters (`--channel`,
//!   `--source`, `--session`, `--model`) did not select, and sessions whose
//!   samples the chat template failed to render. They stay exportable by a
//!   later run whose filters take them.
//! - Sessions without row ids (response store, session files) are covered by
//!   the identities of their exported turns, so a file rewritten shorter (an
//!   undo) does not hide the turns that follow.
//! - The state belongs to one output (format, style, target, destination);
//!   any other is refused before a byte changes.
//! - Split units keep the split they were placed in (see `output`).
//! - Upgrades keep the promise: the state records the export rules of the
//!   run that committed it ([`EXPORT_RULES`]); a run with newer rules
//!   reads every session once and exports the covered turns whose
//!   training target the files do not hold yet (see `recheck`), raising
//!   `rules` only in the commit that records those lines.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::dataset::LineFigures;
use crate::format::Exchange;
use crate::hash::stable_hash;
use crate::model::{Origin, Session};
use crate::sink::{persist, temp_beside};

/// Version 2: pending turns, turn identities, output identity and tails.
/// Version 3 adds `curation` (fingerprints, forgotten sessions). Version 4
/// adds split units, the journal, the tool version and the cumulative
/// figures; versions 2 and 3 are migrated (their sessions keep the split
/// their lines are in, see `output::migrate_units`).
pub const STATE_VERSION: u32 = 4;
/// The oldest version read as is.
const STATE_VERSION_READ: u32 = 2;

/// The number of the export rules: bump it whenever a change makes the
/// tool export turns that an earlier version left covered below the
/// watermark (an exchange the old defaults dropped, a turn the old rebuild
/// lost). A state records the rules of the run that last committed it
/// ([`RunState::rules`]); a run with newer rules re-checks the covered
/// turns once (see `recheck`). Rules 1: tool-using exchanges are
/// written at default flags (earlier versions left them out; see
/// docs/training.md, "Defaults before and after"); 0 is a state of an
/// earlier version.
pub const EXPORT_RULES: u32 = 1;

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
    /// Version 3: sessions moved to valid.jsonl (read for the migration only).
    #[serde(default, skip_serializing)]
    pub forced_valid: Vec<String>,
    /// Version 3: sessions moved to train.jsonl (read for the migration only).
    #[serde(default, skip_serializing)]
    pub forced_train: Vec<String>,
    /// Rejected or undone reply rows (at or below the watermark) already
    /// looked for in the files (each is looked for once).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub superseded_rows: BTreeSet<i64>,
    /// The session of each line of files written without `meta`
    /// (`--no-meta`, `--target openai`), as runs of (session, lines) in file
    /// order per file name, so that `forget` and retraction can tell them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub index: BTreeMap<String, Vec<(String, u64)>>,
    /// What each committed line adds to `dataset` (channel, signal,
    /// tokens), in file order per file name, so that `forget` and
    /// retraction subtract the lines they remove. A file whose list is not
    /// as long as its committed lines (a state of an earlier version) is
    /// recounted from `meta` instead.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub figures: BTreeMap<String, Vec<LineFigures>>,
    /// Lines at the start of each file that have no figures (written
    /// before the state kept them; see `output::migrate_units`): their
    /// tokens are not in `dataset`, and `forget` takes their channel and
    /// signal from their `meta`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unfigured: BTreeMap<String, u64>,
    /// Compression children (and other non-root ids) of exported
    /// lineages → their root, so that `forget` takes any id of a lineage.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lineage: BTreeMap<String, String>,
    /// The split of every unit that has lines (see `output`).
    #[serde(default)]
    pub units: Units,
    /// `forget --before`: per session, the turns at or after the cut that
    /// the lines it removed trained on. An export takes them as new again
    /// (`select::is_new`), so none is lost, and drops a session's entry
    /// once it read the session and consumed them (see
    /// [`RunCoverage::record_session`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reopened: BTreeMap<String, Reopened>,
    /// Rewrites staged but not yet in place (see the module header).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub journal: Vec<Staged>,
    /// The hermes-harvest version of the last committed run.
    #[serde(default)]
    pub tool_version: String,
    /// The export rules ([`EXPORT_RULES`]) of the last committed run; 0 in
    /// a state of an earlier version (the field is missing). A run with
    /// newer rules re-checks the covered turns once (see `recheck`).
    #[serde(default)]
    pub rules: u32,
    /// The state version the file was read as (not written).
    #[serde(skip)]
    pub read_version: u32,
    /// Running sums over every night: what the cumulative files hold.
    #[serde(default)]
    pub dataset: crate::dataset::Dataset,
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

/// The units of each split and the fraction new units are placed by.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Units {
    #[serde(default, skip_serializing_if = "UnitSet::is_empty")]
    pub train: UnitSet,
    #[serde(default, skip_serializing_if = "UnitSet::is_empty")]
    pub valid: UnitSet,
    /// `--valid-fraction` in force, and the units (all, valid) placed when
    /// it took effect: a changed fraction applies to new units only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    #[serde(default)]
    pub base: (u64, u64),
}

/// A sorted set of unit names held as one string and the end of each
/// name in it: a state's units number as many as its sessions, and a
/// string each (in a tree) would cost several times their text. Names are
/// added in batches ([`UnitSet::extend`], one merge), as a run places
/// them. In the state file, a list of strings in byte order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UnitSet {
    text: String,
    ends: Vec<usize>,
}

impl UnitSet {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.get(mid).cmp(name) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    fn last(&self) -> Option<&str> {
        self.len().checked_sub(1).map(|i| self.get(i))
    }

    fn push(&mut self, name: &str) {
        self.text.push_str(name);
        self.ends.push(self.text.len());
    }

    /// Adds names (in any order, repeats allowed); true when any was new.
    pub fn extend<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) -> bool {
        let mut new: Vec<&str> = names.into_iter().filter(|n| !self.contains(n)).collect();
        if new.is_empty() {
            return false;
        }
        new.sort_unstable();
        new.dedup();
        if self.last().is_none_or(|last| last < new[0]) {
            new.into_iter().for_each(|n| self.push(n));
            return true;
        }
        // From the back, in place: the text and the ends grow once, by
        // what is added, and no second copy of them is made.
        let mut text = std::mem::take(&mut self.text).into_bytes();
        let (mut i, mut j) = (self.ends.len(), new.len());
        let mut w = text.len() + new.iter().map(|n| n.len()).sum::<usize>();
        text.resize(w, 0);
        self.ends.resize(i + j, 0);
        while j > 0 {
            let k = i + j - 1;
            let start = if i > 1 { self.ends[i - 2] } else { 0 };
            let old = (i > 0).then(|| start..self.ends[i - 1]);
            self.ends[k] = w;
            match old {
                Some(r) if text[r.clone()] > *new[j - 1].as_bytes() => {
                    w -= r.len();
                    text.copy_within(r, w);
                    i -= 1;
                }
                _ => {
                    let name = new[j - 1].as_bytes();
                    w -= name.len();
                    text[w..w + name.len()].copy_from_slice(name);
                    j -= 1;
                }
            }
        }
        self.text = String::from_utf8(text).expect("whole names were moved");
        true
    }
}

impl Serialize for UnitSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for UnitSet {
    /// Read name by name; a list out of order (an edited file) is sorted.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<UnitSet, D::Error> {
        struct Names;
        impl<'de> serde::de::Visitor<'de> for Names {
            type Value = UnitSet;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of unit names")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<UnitSet, A::Error> {
                let mut set = UnitSet::default();
                let mut rest = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    if rest.is_empty() && set.last().is_none_or(|last| *last < *name) {
                        set.push(&name);
                    } else {
                        rest.push(name);
                    }
                }
                set.extend(rest.iter().map(String::as_str));
                Ok(set)
            }
        }
        d.deserialize_seq(Names)
    }
}

#[cfg(test)]
mod unit_set_tests {
    use super::UnitSet;

    #[test]
    fn names_stay_sorted_and_once_and_read_back_as_written() {
        let mut s = UnitSet::default();
        assert!(s.extend(["m", "c", "x", "c"]));
        assert!(s.extend(["a", "n", "z"]));
        assert!(!s.extend(["m", "a"]), "nothing new");
        let names: Vec<&str> = s.iter().collect();
        assert_eq!(names, ["a", "c", "m", "n", "x", "z"]);
        assert!(s.contains("n") && !s.contains("b") && !s.contains(""));
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(text, r#"["a","c","m","n","x","z"]"#);
        assert_eq!(serde_json::from_str::<UnitSet>(&text).unwrap(), s);
        let edited: UnitSet = serde_json::from_str(r#"["b","a","b","c"]"#).unwrap();
        assert_eq!(edited.iter().collect::<Vec<_>>(), ["a", "b", "c"]);
        // Byte order, as the tree of strings before it wrote them.
        let t: std::collections::BTreeSet<String> =
            ["é", "z", "Z", "a1", "a"].map(String::from).into();
        let mut u = UnitSet::default();
        u.extend(t.iter().rev().map(String::as_str));
        assert_eq!(
            serde_json::to_string(&u).unwrap(),
            serde_json::to_string(&t).unwrap()
        );
    }

    #[test]
    fn batches_merge_as_a_tree_of_strings_would_hold_them() {
        let mut next = crate::hash::test_rng(0x2545_f491_4f6c_dd1d_u64);
        let mut set = UnitSet::default();
        let mut tree = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let batch: Vec<String> = (0..(next() % 40))
                .map(|_| {
                    let n = next();
                    let len = (n % 7) as usize;
                    let letters = ['a', 'b', 'é', 'Z', '1'];
                    (0..len)
                        .map(|k| letters[((n >> (8 * k)) % 5) as usize])
                        .collect()
                })
                .collect();
            let grew = batch.iter().any(|b| !tree.contains(b));
            assert_eq!(set.extend(batch.iter().map(String::as_str)), grew);
            tree.extend(batch);
            assert!(set.iter().eq(tree.iter().map(String::as_str)));
        }
    }
}

/// What a run placed: the units new in each split that got a line, the
/// fraction in force and its base, and the units of each split in all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Placement {
    pub train: Vec<String>,
    pub valid: Vec<String>,
    /// `None` for a destination without splits (nothing placed).
    pub fraction: Option<f64>,
    pub base: (u64, u64),
    /// Units in (train, valid) after the run.
    pub totals: (u64, u64),
}

impl Units {
    /// Adds a run's placement; true when anything changed.
    pub fn apply(&mut self, p: &Placement) -> bool {
        let mut changed = self.train.extend(p.train.iter().map(String::as_str));
        changed |= self.valid.extend(p.valid.iter().map(String::as_str));
        if p.fraction.is_some() && (self.fraction != p.fraction || self.base != p.base) {
            self.fraction = p.fraction;
            self.base = p.base;
            changed = true;
        }
        changed
    }
}

/// A rewrite staged by `forget`: the staged file and what it holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Staged {
    /// The output file's name (a plain name inside the output).
    pub name: String,
    pub new: Committed,
}

/// Bytes at the end of a committed output that are hashed.
pub const TAIL_BYTES: u64 = 4096;

/// The turns of one session that `forget --before` gives back.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Reopened {
    /// Turns whose own time is in one of these spans `[from, to)` (epoch
    /// seconds; sorted, disjoint).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spans: Vec<(f64, f64)>,
    /// Also the session's turns without a time of their own (a removed
    /// line had no `meta.first`: the export times them by the session's
    /// start, which its cut-off judges as usual).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub untimed: bool,
}

impl Reopened {
    /// Whether a turn whose own time is `own` is given back.
    pub fn holds(&self, own: Option<f64>) -> bool {
        match own {
            Some(t) => self.spans.iter().any(|(a, b)| (*a..*b).contains(&t)),
            None => self.untimed,
        }
    }

    /// Adds `other`'s turns.
    pub fn merge(&mut self, other: Reopened) {
        self.untimed |= other.untimed;
        let mut spans = std::mem::take(&mut self.spans);
        spans.extend(other.spans);
        spans.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.total_cmp(&y.1)));
        for (a, b) in spans {
            match self.spans.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => self.spans.push((a, b)),
            }
        }
    }
}

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
    /// Reads the state file, streamed through a buffer: a large state is
    /// parsed as it is read, never held whole beside what it decodes to.
    pub fn load(path: &Path) -> Result<RunState> {
        let limit = crate::safe_io::MAX_STATE_BYTES;
        let open = || match crate::safe_io::open_regular(path, limit) {
            Ok(f) => Ok(Some(std::io::BufReader::with_capacity(
                1 << 16,
                f.take(limit + 1),
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading state file {}", path.display())),
        };
        let Some(reader) = open()? else {
            return Ok(RunState {
                version: STATE_VERSION,
                ..RunState::default()
            });
        };
        let parsed = serde_json::from_reader::<_, RunState>(reader);
        // The version decides the message: a state of an unknown version
        // may not parse at all, so it is read again for it on failure.
        let version = match &parsed {
            Ok(st) => Some(st.version),
            Err(_) => {
                #[derive(Deserialize)]
                struct Version {
                    version: Option<u32>,
                }
                open()?
                    .and_then(|r| serde_json::from_reader::<_, Version>(r).ok())
                    .and_then(|v| v.version)
            }
        };
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
        let mut st = parsed.with_context(|| {
            format!(
                "state file {} is not valid; move it away to start over (everything will be exported again)",
                path.display()
            )
        })?;
        st.read_version = st.version;
        st.version = STATE_VERSION;
        Ok(st)
    }

    /// Replaces the state file atomically (owner-only permissions),
    /// written through a buffer.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tmp = temp_beside(path)?;
        {
            let mut out = std::io::BufWriter::with_capacity(1 << 16, tmp.as_file_mut());
            serde_json::to_writer(&mut out, self)?;
            out.write_all(b"\n")?;
            out.flush()?;
        }
        persist(tmp, path)
    }

    /// Whether the figures of file `name` (after its unfigured lines)
    /// cover its `lines` committed lines, one each.
    pub fn figures_cover(&self, name: &str, lines: u64) -> bool {
        let unfigured = self.unfigured.get(name).copied().unwrap_or(0);
        self.figures.get(name).map_or(0, |v| v.len() as u64) + unfigured == lines
    }

    /// Before a run writes a file the state does not list yet, records it
    /// as committed at 0 bytes (with the output's identity), so that a kill
    /// from now on leaves a file the next run cuts back instead of refusing
    /// it. Saves the state only when something was added.
    pub fn claim(
        &mut self,
        path: &Path,
        names: &[String],
        identity: &OutputIdentity,
    ) -> Result<()> {
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| !self.outputs.contains_key(n.as_str()))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        for n in missing {
            self.outputs.insert(n.clone(), Committed::default());
        }
        self.identity.get_or_insert_with(|| identity.clone());
        self.save(path)
    }
}

/// `<state>.inflight`: present from before a run appends its first byte
/// until its state is committed. Bytes past the committed length of a
/// cumulative file are a killed run's tail (cut back) only while it is
/// there; without it they were added by someone else (refused).
pub fn inflight_path(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".inflight");
    PathBuf::from(name)
}

/// Marks a run of `state` as under way (synced, so that a kill after the
/// first appended byte always finds it).
pub fn mark_inflight(state: &Path) -> Result<()> {
    let path = inflight_path(state);
    let mut f = crate::safe_io::open_private_nofollow(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.set_len(0)?;
    write!(f, "{}", std::process::id())?;
    f.sync_all()?;
    crate::sink::sync_dir(&path);
    Ok(())
}

/// The run of `state` is committed (or wrote nothing).
pub fn clear_inflight(state: &Path) {
    let path = inflight_path(state);
    if std::fs::remove_file(&path).is_ok() {
        crate::sink::sync_dir(&path);
    }
}

/// The staged file of a rewrite of `target`.
pub fn staged_path(target: &Path) -> PathBuf {
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    target.with_file_name(format!(".hermes-harvest-staged-{name}"))
}

/// Whether `name` (from a state file) is a plain file name: a state never
/// leads a command outside its own output.
pub fn plain_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0'])
}

/// Finishes the rewrites a killed command left in the journal (see the
/// module header); `path_of` maps an output file name to its path. Saves
/// the state when there was something to finish.
pub fn finish_journal(
    st: &mut RunState,
    state_path: &Path,
    path_of: &dyn Fn(&str) -> PathBuf,
) -> Result<()> {
    if st.journal.is_empty() {
        return Ok(());
    }
    for entry in std::mem::take(&mut st.journal) {
        if !plain_name(&entry.name) {
            bail!(
                "state file {} names the output file {:?}, which is not a plain file name; nothing was changed",
                state_path.display(),
                entry.name
            );
        }
        let target = path_of(&entry.name);
        let staged = staged_path(&target);
        if entry.new.bytes == 0 {
            // No line left: no file (a 0-byte JSONL file makes loaders fail).
            for p in [&staged, &target] {
                match std::fs::remove_file(p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(e).with_context(|| format!("removing {}", p.display()));
                    }
                    _ => {}
                }
            }
            crate::sink::sync_dir(&target);
        } else if staged.exists() {
            std::fs::rename(&staged, &target)
                .with_context(|| format!("replacing {}", target.display()))?;
            crate::sink::sync_dir(&target);
        } else {
            // Renamed already: the target must hold what was staged.
            let mut file =
                File::open(&target).with_context(|| format!("opening {}", target.display()))?;
            let len = file.metadata()?.len();
            check_committed(&mut file, &target, len, &entry.new)?;
        }
        st.outputs.insert(entry.name, entry.new);
    }
    st.save(state_path)
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
    /// Non-root ids of the lineages read → their root.
    pub lineage: BTreeMap<String, String>,
    /// Sessions whose reopened turns (`RunState::reopened`) this run is
    /// done with.
    pub reopened_done: BTreeSet<String>,
}

impl RunCoverage {
    /// Records what this run did with the turns of one session. A turn is
    /// covered once a run selected it; one a filter left out stays pending
    /// for a later run (never consumed by what was not exported). Another
    /// store's copy of a state.db turn is covered with it: a later run may
    /// not read that state.db session again, and must not take the copy.
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
        self.record_reopened(covered, session, exchanges, sel);
        if session.origin != Some(Origin::StateDb) {
            for (i, ident) in sel.idents.iter().enumerate() {
                if (sel.selected[i] && !sel.too_few) || sel.db_copy[i] {
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

    /// A session's reopened turns are done once it is read: a state.db
    /// session's unconsumed turns in them stay pending by key (they are
    /// new, see `record_session`); another store's session is done only
    /// when every turn in them was consumed (or is a copy of a state.db
    /// turn), as its coverage has no pending list.
    fn record_reopened(
        &mut self,
        covered: &Covered<'_>,
        session: &Session,
        exchanges: &[Exchange<'_>],
        sel: &TurnSelection,
    ) {
        let Some(reopened) = covered.state.and_then(|s| s.reopened.get(&session.id)) else {
            return;
        };
        let left = session.origin != Some(Origin::StateDb)
            && exchanges.iter().enumerate().any(|(i, ex)| {
                let consumed = sel.selected[i] && !sel.too_few;
                !consumed && !sel.copied[i] && reopened.holds(ex.timestamp)
            });
        if !left {
            self.reopened_done.insert(session.id.clone());
        }
    }

    /// Remembers the other ids of a session's lineage.
    pub fn record_lineage(&mut self, covered: &Covered<'_>, session: &Session) {
        if covered.state.is_none() {
            return;
        }
        for id in session.lineage.iter().filter(|id| **id != session.id) {
            self.lineage.insert(id.clone(), session.id.clone());
        }
    }

    /// Gives the turns `consumed` of a session back to pending (its samples
    /// failed to render): nothing of it was written.
    pub fn unconsume(
        &mut self,
        covered: &Covered<'_>,
        session: &Session,
        exchanges: &[Exchange<'_>],
        (consumed, idents): (&[bool], &[u64]),
    ) {
        if covered.state.is_none() {
            return;
        }
        if session.origin != Some(Origin::StateDb) {
            // Its reopened turns stay reopened.
            self.reopened_done.remove(&session.id);
            if let Some(v) = self.covered.get_mut(&session.id) {
                let back: BTreeSet<u64> = idents
                    .iter()
                    .zip(consumed)
                    .filter(|(_, c)| **c)
                    .map(|(i, _)| *i)
                    .collect();
                v.retain(|i| !back.contains(i));
            }
            return;
        }
        let context_upto = session.resume_after.unwrap_or(0);
        let mut left = Pending::default();
        let mut extend = false;
        for (ex, c) in exchanges.iter().zip(consumed) {
            match turn_key(ex.msgs) {
                Some(key) if *c && key > context_upto => {
                    left.add_turn(key, ex.timestamp.or(session.started_at), extend);
                    extend = true;
                }
                _ => extend = false,
            }
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
        // Whether anything changed is tracked step by step, comparing only
        // the entries this run touches: a copy of the whole state to
        // compare against would double a large state's memory.
        let previous = st.watermark;
        let touched: BTreeSet<&String> = self
            .read_db
            .iter()
            .chain(self.pending.keys())
            .chain(&self.unselected)
            .collect();
        let pending_before: Vec<(String, Option<Pending>)> = touched
            .into_iter()
            .map(|id| (id.clone(), st.pending.get(id).cloned()))
            .collect();
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
        let mut changed = pending_before
            .into_iter()
            .any(|(id, was)| st.pending.get(&id) != was.as_ref());
        for id in &self.reopened_done {
            changed |= st.reopened.remove(id).is_some();
        }
        for (id, root) in self.lineage {
            changed |= st.lineage.get(&id) != Some(&root);
            st.lineage.insert(id, root);
        }
        for (id, mut idents) in self.covered {
            let v = st.covered_turns.entry(id).or_default();
            let len = v.len();
            v.append(&mut idents);
            v.sort_unstable();
            v.dedup();
            // Sorted and deduplicated before and after: nothing new was
            // added exactly when the length stayed.
            changed |= v.len() != len;
        }
        if let Some(w) = written {
            for (name, committed) in &w.files {
                changed |=
                    st.outputs.insert(name.clone(), committed.clone()).as_ref() != Some(committed);
            }
            changed |= st.units.apply(&w.units);
            for (name, runs) in &w.index {
                changed |= st.index.insert(name.clone(), runs.clone()).as_ref() != Some(runs);
            }
            for (name, new) in &w.figures {
                changed |= !new.is_empty();
                st.figures.entry(name.clone()).or_default().extend(new);
            }
        }
        changed |= !st.forced_valid.is_empty() || !st.forced_train.is_empty();
        st.forced_valid.clear();
        st.forced_train.clear();
        let version = env!("CARGO_PKG_VERSION");
        changed |= st.tool_version != version;
        st.tool_version = version.to_string();
        changed |= top > st.watermark;
        st.watermark = st.watermark.max(top);
        changed |= st.selection != selection;
        st.selection = selection;
        changed |= st.identity.as_ref() != Some(&identity);
        st.identity = Some(identity);
        let changed = changed || written.is_some_and(|w| !w.files.is_empty());
        if changed {
            st.runs += 1;
        }
        changed
    }
}

/// What the previous runs covered (`state` is `None` without `--state`).
pub struct Covered<'a> {
    pub watermark: i64,
    pub state: Option<&'a RunState>,
}

/// What selection made of each turn (exchange) of one session.
#[derive(Debug, Default)]
pub struct TurnSelection {
    /// Exported in this run (unless the session has too few turns).
    pub selected: Vec<bool>,
    /// Another store's copy of which is exported: never context either.
    pub copied: Vec<bool>,
    /// Not covered by any committed run.
    pub fresh: Vec<bool>,
    /// Inside the time window.
    pub usable: Vec<bool>,
    /// Identities of the turns (sessions without row ids only).
    pub idents: Vec<u64>,
    /// Turns left out as copies of state.db turns (another store's only):
    /// covered as the state.db turn is, so that a later run, which may not
    /// read that state.db session again, never takes them as new.
    pub db_copy: Vec<bool>,
    /// Covered turns a re-check takes (see `recheck`; empty otherwise).
    pub rechecked: Vec<bool>,
    /// Complete turns in the window, old and new.
    pub complete: usize,
    /// SFT: the session has fewer complete turns than `--min-turns`.
    pub too_few: bool,
}

impl TurnSelection {
    pub fn any(&self) -> bool {
        self.selected.iter().any(|s| *s)
    }

    /// How many turns were left out as copies of state.db turns.
    pub fn duplicates(&self) -> usize {
        self.db_copy.iter().filter(|c| **c).count()
    }
}

pub use crate::model::turn_key;

/// What the run wrote, for the manifest and the state.
#[derive(Debug, Default, Clone)]
pub struct Written {
    pub new_lines: u64,
    /// New lines per file name.
    pub new_per_file: BTreeMap<String, u64>,
    /// file name → what it holds after this run.
    pub files: Vec<(String, Committed)>,
    /// The units this run placed (with a line), and the totals after it.
    pub units: Placement,
    /// The session index of files written without `meta`.
    pub index: BTreeMap<String, Vec<(String, u64)>>,
    /// The figures of this run's new lines per file name, in file order.
    pub figures: BTreeMap<String, Vec<LineFigures>>,
    /// Units placed in this run, and of those in valid.
    pub new_units: (u64, u64),
    /// Every line reached its destination (false when the reader of a
    /// pipe went away first), and the lines a stream's reader took.
    pub delivered: bool,
    pub delivered_lines: u64,
}

/// Hash of the last [`TAIL_BYTES`] bytes before `end`.
pub(crate) fn tail_hash(file: &mut File, end: u64) -> Result<String> {
    let start = end.saturating_sub(TAIL_BYTES);
    let mut buf = vec![0; (end - start) as usize];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut buf)?;
    file.seek(SeekFrom::End(0))?;
    let text: String = buf.iter().map(|b| *b as char).collect();
    Ok(format!("{:016x}", stable_hash(&text)))
}

/// Checks that `file` still starts with what the state committed: at least
/// that many bytes, ending with a newline, with the same tail.
pub(crate) fn check_committed(
    file: &mut File,
    target: &Path,
    len: u64,
    c: &Committed,
) -> Result<()> {
    let changed = |why: &str| -> anyhow::Error {
        crate::exit::Failure::new(crate::exit::ERROR, format!(
            "{} does not hold what the state file committed ({why}): it was changed by another export or by hand. Nothing was written; restore it, or start over with a new state file and an empty output",
            target.display()
        ))
        .into()
    };
    if len < c.bytes {
        return Err(changed(&format!("{len} bytes, {} were committed", c.bytes)));
    }
    if c.bytes == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(c.bytes - 1))?;
    file.read_exact(&mut last)?;
    if last[0] != b'\n' || tail_hash(file, c.bytes)? != c.tail {
        return Err(changed("its committed lines differ"));
    }
    Ok(())
}
