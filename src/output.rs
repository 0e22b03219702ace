//! The export destination: stdout, one JSONL file, or a directory with
//! `train.jsonl`, `valid.jsonl` and `manifest.json`.
//!
//! Files are built in temporary files beside their targets and renamed
//! into place only when the run succeeds, so a crash or kill leaves the
//! previous files intact. With `--state` the files are cumulative: a run
//! starts from the committed bytes of each file (see `state`) and appends
//! only what is new. Before a cumulative file is cut back to its committed
//! length, its committed tail is checked against the hash the state
//! recorded: a file changed by someone else (another export, a hand edit)
//! is refused, never cut in the middle of a line.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tempfile::TempPath;

use crate::exit::{self, Failure};
use crate::paths::Dest;
use crate::sink::{Stdout, persist, sync_dir, temp_beside};
use std::collections::BTreeMap;

use crate::coverage::{LEGACY_SPLIT, SPLIT};
use crate::dataset::LineFigures;
use crate::state::{Committed, Placement, RunState, Units, Written, check_committed, tail_hash};

/// Trainers' usual batch size: mlx-lm refuses a split with fewer rows.
pub const MIN_VALID_LINES: u64 = 4;

/// The split of units between train.jsonl and valid.jsonl.
///
/// Rules (a unit is a session lineage, or one UTC day of a nexus session;
/// see `curate::meta`):
/// - A unit's split is decided once, when its first line is written, and
///   recorded in the state; it never changes, so no line ever moves.
/// - The first unit goes to train, so train.jsonl is never empty while
///   there is data.
/// - A new unit goes to valid while valid holds fewer units than
///   `round(fraction × units)`, counted over the units placed since the
///   fraction took effect; else to train. With little data (fewer than
///   `0.5 / fraction` units) valid stays empty, and the summary and the
///   card say so.
/// - A changed `--valid-fraction` applies to new units only (the summary
///   says so): the units placed so far keep their split.
#[derive(Debug, Default)]
pub struct Splits<'s> {
    /// The units committed runs placed (the state's, borrowed: a large
    /// state holds hundreds of thousands; this run only adds to them).
    committed: Option<&'s Units>,
    fraction: f64,
    /// (units, valid units) placed when `fraction` took effect.
    base: (u64, u64),
    /// The fraction in force before this run, when it changed.
    pub changed_from: Option<f64>,
    /// Units placed in this run: (in valid, a line was written in it).
    placed: BTreeMap<String, (bool, bool)>,
    /// Of `placed`, those in valid.
    placed_valid: u64,
}

impl<'s> Splits<'s> {
    pub fn new(committed: Option<&'s Units>, fraction: f64) -> Splits<'s> {
        let (base, changed_from) = match committed {
            Some(u) if u.fraction == Some(fraction) => (u.base, None),
            Some(u) => (
                ((u.train.len() + u.valid.len()) as u64, u.valid.len() as u64),
                u.fraction,
            ),
            None => ((0, 0), None),
        };
        Splits {
            committed,
            fraction,
            base,
            changed_from,
            placed: BTreeMap::new(),
            placed_valid: 0,
        }
    }

    /// Units in (train, valid) that committed runs placed.
    fn committed_totals(&self) -> (u64, u64) {
        self.committed
            .map_or((0, 0), |u| (u.train.len() as u64, u.valid.len() as u64))
    }

    /// Units in (train, valid), committed and placed in this run.
    fn totals(&self) -> (u64, u64) {
        let (t, v) = self.committed_totals();
        let placed = self.placed.len() as u64;
        (t + placed - self.placed_valid, v + self.placed_valid)
    }

    /// Whether `unit` is in valid (placing it when it is new).
    pub fn is_valid(&mut self, unit: &str) -> bool {
        if let Some(u) = self.committed {
            if u.valid.contains(unit) {
                return true;
            }
            if u.train.contains(unit) {
                return false;
            }
        }
        if let Some((valid, _)) = self.placed.get(unit) {
            return *valid;
        }
        let (train, valid_units) = self.totals();
        let n = train + valid_units + 1;
        let (base_n, base_v) = self.base;
        let want = base_v + (self.fraction * n.saturating_sub(base_n) as f64).round() as u64;
        let valid = train > 0 && valid_units < want;
        self.placed.insert(unit.to_string(), (valid, false));
        self.placed_valid += u64::from(valid);
        valid
    }

    fn wrote(&mut self, unit: &str) {
        if let Some((_, has)) = self.placed.get_mut(unit) {
            *has = true;
        }
    }

    /// Units placed in this run with a line, and of those in valid.
    fn new_units(&self) -> (u64, u64) {
        let with_lines = self.placed.values().filter(|(_, l)| *l);
        let valid = with_lines.clone().filter(|(v, _)| *v).count() as u64;
        (with_lines.count() as u64, valid)
    }

    /// The placement as committed: units placed in this run without a
    /// line are placed again by a later run.
    fn settle(self) -> Placement {
        let (t, v) = self.committed_totals();
        let mut p = Placement {
            fraction: Some(self.fraction),
            base: self.base,
            ..Placement::default()
        };
        for (unit, (valid, has_lines)) in self.placed {
            match (has_lines, valid) {
                (false, _) => {}
                (true, true) => p.valid.push(unit),
                (true, false) => p.train.push(unit),
            }
        }
        p.totals = (t + p.train.len() as u64, v + p.valid.len() as u64);
        p
    }
}

/// Reads the units of a state written before version 4 from the lines of
/// its committed files (`meta.unit`, else `meta.session`): each keeps the
/// split its lines are in. Lines without `meta` leave their sessions
/// unplaced.
pub fn migrate_units(st: &mut RunState, path_of: &dyn Fn(&str) -> PathBuf) -> Result<()> {
    if st.read_version >= 4 || !st.units.train.is_empty() || !st.units.valid.is_empty() {
        return Ok(());
    }
    let mut metas = Vec::new();
    for (name, c) in &st.outputs {
        if c.lines == 0 || !crate::state::plain_name(name) {
            continue;
        }
        let path = path_of(name);
        let mut file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let len = file.metadata()?.len();
        check_committed(&mut file, &path, len, c)?;
        file.seek(SeekFrom::Start(0))?;
        let mut bytes = Vec::new();
        file.take(c.bytes).read_to_end(&mut bytes)?;
        let mut units = Vec::new();
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap_or_default();
            if let Some(u) = v["meta"]["unit"].as_str().or(v["meta"]["session"].as_str()) {
                units.push(u.to_string());
            }
            metas.push(v["meta"].clone());
        }
        let side = if name == "valid.jsonl" {
            &mut st.units.valid
        } else {
            &mut st.units.train
        };
        side.extend(units.iter().map(String::as_str));
        st.dataset.lines.insert(name.clone(), c.lines);
        st.unfigured.insert(name.clone(), c.lines);
    }
    // Those versions kept no dataset sums: lines per channel and signal
    // and the time range are counted from `meta` (tokens are not known).
    st.dataset.recount(&metas, true);
    if let Some(id) = st.identity.as_mut()
        && id.split == LEGACY_SPLIT
    {
        id.split = SPLIT.to_string();
    }
    Ok(())
}

struct FileOut {
    name: String,
    target: PathBuf,
    out: BufWriter<File>,
    /// Snapshot mode: the temporary file that replaces `target` at the end.
    /// Cumulative mode writes `target` in place instead.
    temp: Option<TempPath>,
    base_lines: u64,
    new_lines: u64,
}

impl FileOut {
    /// Snapshot mode (`cumulative` is false): a temporary file beside
    /// `target`. Cumulative mode: `target` itself, checked against and cut
    /// back to its committed state `keep` (dropping the tail a killed run
    /// may have left), and appended to.
    fn open(
        target: &Path,
        name: &str,
        cumulative: bool,
        (keep, interrupted): (Option<&Committed>, bool),
    ) -> Result<FileOut> {
        let (file, temp, base_lines) = if !cumulative {
            let (file, path) = temp_beside(target)?.into_parts();
            (file, Some(path), 0)
        } else {
            let mut file = crate::safe_io::open_private_nofollow(target)
                .with_context(|| format!("opening {}", target.display()))?;
            let meta = file.metadata()?;
            let len = meta.len();
            let (bytes, lines) = match keep {
                Some(c) => {
                    check_committed(&mut file, target, len, c)?;
                    check_no_tail(target, len, c, interrupted)?;
                    (c.bytes, c.lines)
                }
                None if len > 0 => {
                    return Err(refused(format!(
                        "{} already holds {len} bytes that this state file did not write (another export, or another format); a cumulative output needs its own file or an empty directory: move the file away or choose another --out",
                        target.display()
                    )));
                }
                None => (0, 0),
            };
            file.set_len(bytes)?;
            file.seek(SeekFrom::End(0))?;
            (file, None, lines)
        };
        Ok(FileOut {
            name: name.to_string(),
            target: target.to_path_buf(),
            out: BufWriter::with_capacity(1 << 16, file),
            temp,
            base_lines,
            new_lines: 0,
        })
    }

    fn line(&mut self, line: &[u8]) -> Result<()> {
        self.out
            .write_all(line)
            .and_then(|_| self.out.write_all(b"\n"))
            .with_context(|| format!("writing {}", self.target.display()))?;
        self.new_lines += 1;
        Ok(())
    }

    /// Flushes and fsyncs; a snapshot file is then renamed over the target.
    /// Returns the name and the file as now on disk. With `drop_empty`, a
    /// file left without a line is removed instead (a 0-byte JSONL file
    /// makes loaders fail).
    fn commit(self, drop_empty: bool) -> Result<(String, Committed)> {
        let target = self.target;
        let file = self
            .out
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", target.display()))?;
        file.sync_all()
            .with_context(|| format!("syncing {}", target.display()))?;
        let bytes = file.metadata()?.len();
        let mut file = file;
        let tail = tail_hash(&mut file, bytes)?;
        drop(file);
        if drop_empty && bytes == 0 {
            drop(self.temp);
            remove_empty(&target)?;
            return Ok((self.name, Committed::default()));
        }
        if let Some(temp) = self.temp {
            temp.persist(&target)
                .with_context(|| format!("replacing {}", target.display()))?;
        }
        sync_dir(&target);
        Ok((
            self.name,
            Committed {
                bytes,
                lines: self.base_lines + self.new_lines,
                tail,
            },
        ))
    }

    /// Leaves a cumulative file as committed, appending nothing; a file
    /// that holds no byte (this run created it) is removed again, as
    /// [`FileOut::commit`] removes it.
    fn leave(self) -> Result<()> {
        let empty = self.out.get_ref().metadata()?.len() == 0;
        drop(self.out);
        if empty {
            remove_empty(&self.target)?;
        }
        Ok(())
    }
}

/// Removes a split file left without a line: a 0-byte JSONL file makes
/// loaders fail (`datasets` refuses it, mlx-lm an empty valid.jsonl).
fn remove_empty(target: &Path) -> Result<()> {
    match std::fs::remove_file(target) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing {}", target.display()));
        }
        _ => {}
    }
    sync_dir(target);
    Ok(())
}

fn refused(msg: String) -> anyhow::Error {
    Failure::new(exit::ERROR, msg).into()
}

/// Bytes past the committed length are a killed run's tail only when a run
/// was interrupted (`state::inflight_path`); else someone appended them,
/// and the file is refused rather than cut.
pub(crate) fn check_no_tail(
    target: &Path,
    len: u64,
    c: &Committed,
    interrupted: bool,
) -> Result<()> {
    if len <= c.bytes || interrupted {
        return Ok(());
    }
    Err(refused(format!(
        "{} holds {} bytes after the {} line(s) the state file committed, and no run of this state was interrupted: they were added by hand or by another program. Nothing was written; remove them (cut the file back to {} bytes) or start over with a new state file and an empty output",
        target.display(),
        len - c.bytes,
        c.lines,
        c.bytes
    )))
}

pub struct Output<'s> {
    kind: Kind,
    cumulative: bool,
    pub splits: Splits<'s>,
    valid_fraction: f64,
    /// Lines without `meta` in a cumulative file: the session of each, as
    /// runs per file name (see `RunState::index`); `None` with meta.
    index: Option<BTreeMap<String, Vec<(String, u64)>>>,
    /// The figures of the lines this run wrote to a cumulative file, per
    /// file name (see `RunState::figures`).
    figures: BTreeMap<String, Vec<LineFigures>>,
}

enum Kind {
    Stdout(Stdout),
    File(FileOut),
    Dir {
        dir: PathBuf,
        train: FileOut,
        valid: FileOut,
    },
}

impl<'s> Output<'s> {
    /// `interrupted`: a run of this state was killed before its commit
    /// (its tails are cut back).
    pub fn open(
        dest: &Dest,
        state: Option<&RunState>,
        valid_fraction: f64,
        (interrupted, meta): (bool, bool),
    ) -> Result<Output<'static>> {
        let cumulative = state.is_some();
        let keep = |name: &str| (state.and_then(|s| s.outputs.get(name)), interrupted);
        let kind = match dest {
            Dest::Stdout => Kind::Stdout(Stdout::new()),
            Dest::Special(path) => {
                // Written into like a shell redirection (a FIFO, a terminal,
                // /dev/stdout): never replaced, never cut back.
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .with_context(|| format!("opening {}", path.display()))?;
                Kind::Stdout(Stdout::on(Box::new(file), path.display().to_string()))
            }
            Dest::File(path) => {
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("out.jsonl")
                    .to_string();
                let keep = keep(&name);
                Kind::File(FileOut::open(path, &name, cumulative, keep)?)
            }
            Dest::Dir(dir) => {
                crate::safe_io::create_private_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                let file = |name: &str| -> Result<FileOut> {
                    let path = dir.join(name);
                    crate::safe_io::check_managed_file(&path).map_err(refused)?;
                    FileOut::open(&path, name, cumulative, keep(name))
                };
                Kind::Dir {
                    dir: dir.clone(),
                    train: file("train.jsonl")?,
                    valid: file("valid.jsonl")?,
                }
            }
        };
        Ok(Output {
            kind,
            cumulative,
            splits: Splits::new(None, valid_fraction),
            valid_fraction,
            index: state.filter(|_| !meta).map(|s| s.index.clone()),
            figures: BTreeMap::new(),
        })
    }

    /// A destination that keeps nothing (`export --dry-run`).
    pub fn discard() -> Output<'static> {
        Output {
            kind: Kind::Stdout(Stdout::on(Box::new(std::io::sink()), "nowhere".into())),
            cumulative: false,
            splits: Splits::default(),
            valid_fraction: 0.0,
            index: None,
            figures: BTreeMap::new(),
        }
    }

    /// The output with the state's committed split units, borrowed for
    /// the run (the state is written to once more, by its claim, after
    /// the output is opened and before a line is).
    pub fn with_units<'t>(self, committed: Option<&'t Units>) -> Output<'t> {
        Output {
            splits: Splits::new(committed, self.valid_fraction),
            kind: self.kind,
            cumulative: self.cumulative,
            valid_fraction: self.valid_fraction,
            index: self.index,
            figures: self.figures,
        }
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir { .. })
    }

    /// The names of the files this output writes (for the state's claim).
    pub fn file_names(&self) -> Vec<String> {
        match &self.kind {
            Kind::Stdout(_) => Vec::new(),
            Kind::File(f) => vec![f.name.clone()],
            Kind::Dir { train, valid, .. } => vec![train.name.clone(), valid.name.clone()],
        }
    }

    /// Whether a line of `unit` goes to valid.jsonl (placing the unit when
    /// it is new); always false for a destination without splits.
    pub fn is_valid(&mut self, unit: &str) -> bool {
        self.is_dir() && self.splits.is_valid(unit)
    }

    /// Writes one line of `unit` (of `session`), which adds `figures` to
    /// the dataset's sums.
    pub fn line(
        &mut self,
        (session, unit): (&str, &str),
        line: &[u8],
        figures: LineFigures,
    ) -> Result<()> {
        let valid = self.is_valid(unit);
        self.index_line(session, valid, figures);
        match &mut self.kind {
            Kind::Stdout(sink) => sink.line(line),
            Kind::File(f) => f.line(line),
            Kind::Dir {
                train, valid: v, ..
            } => {
                self.splits.wrote(unit);
                if valid {
                    return v.line(line);
                }
                train.line(line)?;
                if train.new_lines == crate::stall::MID_OUTPUT_LINES {
                    train.out.flush()?;
                    crate::stall::point("mid-output");
                }
                Ok(())
            }
        }
    }

    /// Adds a line of `session` to the index of the file it goes to, and
    /// its figures (cumulative files only).
    fn index_line(&mut self, session: &str, valid: bool, figures: LineFigures) {
        let name = match &self.kind {
            Kind::File(f) => &f.name,
            Kind::Dir {
                train, valid: v, ..
            } => {
                if valid {
                    &v.name
                } else {
                    &train.name
                }
            }
            Kind::Stdout(_) => return,
        };
        if self.cumulative {
            self.figures.entry(name.clone()).or_default().push(figures);
        }
        let Some(index) = self.index.as_mut() else {
            return;
        };
        let runs = index.entry(name.clone()).or_default();
        match runs.last_mut() {
            Some((s, n)) if s == session => *n += 1,
            _ => runs.push((session.to_string(), 1)),
        }
    }

    /// New lines written so far.
    pub fn new_lines(&self) -> u64 {
        match &self.kind {
            Kind::Stdout(_) => 0,
            Kind::File(f) => f.new_lines,
            Kind::Dir { train, valid, .. } => train.new_lines + valid.new_lines,
        }
    }

    /// Puts everything in place. `manifest` (directory output only) is
    /// written last; a directory always gets one, even when nothing is new.
    /// A cumulative file output that wrote nothing is left untouched and
    /// `None` returned.
    pub fn finish(self, manifest: &dyn Fn(&Written) -> Result<Vec<u8>>) -> Result<Option<Written>> {
        let nothing_new = self.new_lines() == 0;
        match self.kind {
            Kind::Stdout(mut sink) => {
                let delivered = sink.finish()?;
                Ok(Some(Written {
                    delivered,
                    delivered_lines: sink.delivered(),
                    ..Written::default()
                }))
            }
            Kind::File(f) => {
                if self.cumulative && nothing_new {
                    return Ok(None);
                }
                let new_lines = f.new_lines;
                Ok(Some(Written {
                    index: self.index.unwrap_or_default(),
                    figures: self.figures,
                    new_lines,
                    new_per_file: [(f.name.clone(), new_lines)].into(),
                    files: vec![f.commit(false)?],
                    delivered: true,
                    ..Written::default()
                }))
            }
            Kind::Dir { dir, train, valid } => {
                if self.cumulative && nothing_new && dir.join("manifest.json").exists() {
                    // The manifest and card already describe these files; a
                    // split file this run opened empty goes again.
                    train.leave()?;
                    valid.leave()?;
                    return Ok(None);
                }
                let new_units = self.splits.new_units();
                let mut w = Written {
                    new_lines: train.new_lines + valid.new_lines,
                    new_per_file: [
                        (train.name.clone(), train.new_lines),
                        (valid.name.clone(), valid.new_lines),
                    ]
                    .into(),
                    units: self.splits.settle(),
                    index: self.index.unwrap_or_default(),
                    figures: self.figures,
                    new_units,
                    delivered: true,
                    ..Written::default()
                };
                for f in [train, valid] {
                    w.files.push(f.commit(true)?);
                }
                crate::stall::point("outputs-committed");
                let target = dir.join("manifest.json");
                let mut tmp = temp_beside(&target)?;
                tmp.write_all(&manifest(&w)?)?;
                persist(tmp, &target)?;
                Ok(Some(w))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` new units placed over `committed` at `fraction`, each with a
    /// line; the placement as committed.
    fn place(committed: Option<&Units>, prefix: &str, n: usize, fraction: f64) -> Placement {
        let mut s = Splits::new(committed, fraction);
        for i in 0..n {
            let u = format!("{prefix}{i:04}");
            s.is_valid(&u);
            s.wrote(&u);
        }
        s.settle()
    }

    #[test]
    fn the_first_unit_trains_and_valid_follows_the_fraction_in_units() {
        let p = place(None, "u", 1, 0.9);
        assert_eq!((p.train.len(), p.valid.len(), p.totals), (1, 0, (1, 0)));
        for (n, f) in [(14, 0.05), (200, 0.05), (1000, 0.1), (7, 0.5)] {
            let p = place(None, "u", n, f);
            let v = p.valid.len() as f64;
            assert!((v - f * n as f64).abs() <= 1.0, "{v} valid of {n} at {f}");
            assert_eq!(p.train.len() + p.valid.len(), n);
            assert_eq!(p.totals, (p.train.len() as u64, p.valid.len() as u64));
        }
    }

    #[test]
    fn a_placed_unit_keeps_its_split_and_a_new_fraction_applies_to_new_units_only() {
        let mut units = Units::default();
        assert!(units.apply(&place(None, "u", 100, 0.1)));
        let valid: Vec<String> = units.valid.iter().map(String::from).collect();
        let mut s = Splits::new(Some(&units), 0.5);
        assert_eq!(s.changed_from, Some(0.1));
        for u in &valid {
            assert!(s.is_valid(u), "{u} moved");
        }
        for u in units.train.iter() {
            assert!(!s.is_valid(u), "{u} moved");
        }
        for i in 0..100 {
            let u = format!("new{i:04}");
            s.is_valid(&u);
            s.wrote(&u);
        }
        let p = s.settle();
        assert!(p.train.iter().chain(&p.valid).all(|u| u.starts_with("new")));
        assert!(
            (49..=51).contains(&p.valid.len()),
            "{} of 100 new units",
            p.valid.len()
        );
        assert_eq!(p.totals.1, (valid.len() + p.valid.len()) as u64);
        assert!(units.apply(&p));
        assert_eq!(units.valid.len() as u64, p.totals.1);
        assert!(!units.apply(&p), "applied twice, nothing changes");
    }

    #[test]
    fn a_unit_placed_without_a_line_is_not_committed() {
        let mut s = Splits::new(None, 0.5);
        s.is_valid("a");
        s.wrote("a");
        s.is_valid("b");
        assert_eq!(s.new_units(), (1, 0));
        let p = s.settle();
        assert_eq!(
            (p.train, p.valid, p.totals),
            (vec!["a".to_string()], vec![], (1, 0))
        );
    }
}
