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
use crate::hash::{fmix64, stable_hash};
use crate::paths::Dest;
use crate::sink::{Stdout, persist, sync_dir, temp_beside};
use crate::state::{Committed, RunState, TAIL_BYTES};

/// Trainers' usual batch size: mlx-lm refuses a split with fewer rows.
pub const MIN_VALID_LINES: u64 = 4;

/// How sessions are split (recorded in the state's output identity).
pub const SPLIT: &str = "fnv1a-fmix64";

/// A session's place in [0, 1) for the split: the top 53 bits of its id's
/// FNV-1a hash after the fmix64 finalizer (ids such as `nexus-world-0001`,
/// `…0002` differ only at the end).
fn split_point(session: &str) -> f64 {
    (fmix64(stable_hash(session)) >> 11) as f64 / (1u64 << 53) as f64
}

struct FileOut {
    name: String,
    target: PathBuf,
    out: BufWriter<File>,
    /// Snapshot mode: the temporary file that replaces `target` at the end.
    /// Cumulative mode writes `target` in place instead.
    temp: Option<TempPath>,
    base_bytes: u64,
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
        keep: Option<&Committed>,
    ) -> Result<FileOut> {
        let (file, temp, base_bytes, base_lines) = if !cumulative {
            let (file, path) = temp_beside(target)?.into_parts();
            (file, Some(path), 0, 0)
        } else {
            let mut file = crate::safe_io::open_private_nofollow(target)
                .with_context(|| format!("opening {}", target.display()))?;
            let meta = file.metadata()?;
            let len = meta.len();
            let (bytes, lines) = match keep {
                Some(c) => {
                    check_committed(&mut file, target, len, c)?;
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
            (file, None, bytes, lines)
        };
        Ok(FileOut {
            name: name.to_string(),
            target: target.to_path_buf(),
            out: BufWriter::with_capacity(1 << 16, file),
            temp,
            base_bytes,
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

    fn offset(&mut self) -> Result<u64> {
        self.out.flush()?;
        Ok(self.out.get_mut().stream_position()?)
    }

    /// Flushes and fsyncs; a snapshot file is then renamed over the target.
    /// Returns the name and the file as now on disk.
    fn commit(self) -> Result<(String, Committed)> {
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
}

fn refused(msg: String) -> anyhow::Error {
    Failure::new(exit::ERROR, msg).into()
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
    let changed = |why: &str| {
        refused(format!(
            "{} does not hold what the state file committed ({why}): it was changed by another export or by hand. Nothing was written; restore it, or start over with a new state file and an empty output",
            target.display()
        ))
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

/// Lines of one session written to train.jsonl in this run.
struct TrainRun {
    point: f64,
    session: String,
    start: u64,
    end: u64,
    lines: u64,
}

pub struct Output {
    kind: Kind,
    cumulative: bool,
    valid_fraction: f64,
    forced_valid: Vec<String>,
    forced_train: Vec<String>,
    train_runs: Vec<TrainRun>,
    current: Option<(String, u64, u64)>, // session, start offset, lines so far
    valid_runs: Vec<TrainRun>,
    current_valid: Option<(String, u64, u64)>,
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

/// What the run wrote, for the manifest and the state.
#[derive(Debug, Default, Clone)]
pub struct Written {
    pub new_lines: u64,
    /// file name → what it holds after this run.
    pub files: Vec<(String, Committed)>,
    pub forced_valid: Vec<String>,
    pub forced_train: Vec<String>,
    /// Every line reached its destination (false when the reader of a
    /// pipe went away first).
    pub delivered: bool,
}

impl Output {
    pub fn open(dest: &Dest, state: Option<&RunState>, valid_fraction: f64) -> Result<Output> {
        let cumulative = state.is_some();
        let keep = |name: &str| state.and_then(|s| s.outputs.get(name));
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
            valid_fraction,
            forced_valid: state.map(|s| s.forced_valid.clone()).unwrap_or_default(),
            forced_train: state.map(|s| s.forced_train.clone()).unwrap_or_default(),
            train_runs: Vec::new(),
            current: None,
            valid_runs: Vec::new(),
            current_valid: None,
        })
    }

    /// A destination that keeps nothing (`export --dry-run`).
    pub fn discard() -> Output {
        Output {
            kind: Kind::Stdout(Stdout::on(Box::new(std::io::sink()), "nowhere".into())),
            cumulative: false,
            valid_fraction: 0.0,
            forced_valid: Vec::new(),
            forced_train: Vec::new(),
            train_runs: Vec::new(),
            current: None,
            valid_runs: Vec::new(),
            current_valid: None,
        }
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir { .. })
    }

    fn is_valid(&self, session: &str) -> bool {
        if self.forced_train.iter().any(|s| s == session) {
            return false;
        }
        split_point(session) < self.valid_fraction || self.forced_valid.iter().any(|s| s == session)
    }

    /// Writes one line of `session`.
    pub fn line(&mut self, session: &str, line: &[u8]) -> Result<()> {
        let valid = self.is_valid(session);
        match &mut self.kind {
            Kind::Stdout(sink) => sink.line(line),
            Kind::File(f) => f.line(line),
            Kind::Dir {
                train, valid: v, ..
            } => {
                if valid {
                    if self
                        .current_valid
                        .as_ref()
                        .is_none_or(|(s, _, _)| s != session)
                    {
                        Self::close_run(&mut self.current_valid, &mut self.valid_runs, v)?;
                        self.current_valid = Some((session.to_string(), v.offset()?, 0));
                    }
                    if let Some(cur) = self.current_valid.as_mut() {
                        cur.2 += 1;
                    }
                    return v.line(line);
                }
                if self.current.as_ref().is_none_or(|(s, _, _)| s != session) {
                    Self::close_run(&mut self.current, &mut self.train_runs, train)?;
                    self.current = Some((session.to_string(), train.offset()?, 0));
                }
                if let Some(cur) = self.current.as_mut() {
                    cur.2 += 1;
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

    fn close_run(
        current: &mut Option<(String, u64, u64)>,
        runs: &mut Vec<TrainRun>,
        train: &mut FileOut,
    ) -> Result<()> {
        if let Some((session, start, lines)) = current.take() {
            let end = train.offset()?;
            runs.push(TrainRun {
                point: split_point(&session),
                session,
                start,
                end,
                lines,
            });
        }
        Ok(())
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
    /// written last. In cumulative mode a run that wrote nothing leaves the
    /// files untouched and returns `None`.
    pub fn finish(
        mut self,
        manifest: &dyn Fn(&Written) -> Result<Vec<u8>>,
    ) -> Result<Option<Written>> {
        let nothing_new = self.new_lines() == 0;
        match self.kind {
            Kind::Stdout(sink) => {
                let delivered = sink.finish()?;
                Ok(Some(Written {
                    delivered,
                    ..Written::default()
                }))
            }
            Kind::File(f) => {
                if self.cumulative && nothing_new {
                    return Ok(None);
                }
                let new_lines = f.new_lines;
                Ok(Some(Written {
                    new_lines,
                    files: vec![f.commit()?],
                    delivered: true,
                    ..Written::default()
                }))
            }
            Kind::Dir {
                dir,
                mut train,
                mut valid,
            } => {
                if self.cumulative && nothing_new {
                    return Ok(None);
                }
                Self::close_run(&mut self.current, &mut self.train_runs, &mut train)?;
                Self::close_run(&mut self.current_valid, &mut self.valid_runs, &mut valid)?;
                let moved = ensure_valid_batch(&mut train, &mut valid, &mut self.train_runs)?;
                self.forced_valid.extend(moved);
                let moved = ensure_train_not_empty(&mut valid, &mut train, &self.valid_runs)?;
                self.forced_train.extend(moved);
                let mut w = Written {
                    new_lines: train.new_lines + valid.new_lines,
                    forced_valid: self.forced_valid.clone(),
                    forced_train: self.forced_train.clone(),
                    delivered: true,
                    ..Written::default()
                };
                for f in [train, valid] {
                    w.files.push(f.commit()?);
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

/// When train.jsonl would stay empty while valid.jsonl got lines of at
/// least two sessions in this run, moves the session with the highest split
/// point (lines of this run only) to train, so both splits hold data.
fn ensure_train_not_empty(
    valid: &mut FileOut,
    train: &mut FileOut,
    runs: &[TrainRun],
) -> Result<Vec<String>> {
    let sessions: std::collections::BTreeSet<&str> =
        runs.iter().map(|r| r.session.as_str()).collect();
    if train.base_lines + train.new_lines > 0 || sessions.len() < 2 {
        return Ok(Vec::new());
    }
    let pick = runs
        .iter()
        .max_by(|a, b| a.point.total_cmp(&b.point).then(a.session.cmp(&b.session)))
        .map(|r| r.session.clone())
        .expect("runs is not empty");
    valid.out.flush()?;
    let file = valid.out.get_mut();
    let mut kept = Vec::new();
    let mut moved = Vec::new();
    let mut kept_lines = 0;
    for run in runs {
        let mut chunk = vec![0; (run.end - run.start) as usize];
        file.seek(SeekFrom::Start(run.start))?;
        file.read_exact(&mut chunk)?;
        if run.session == pick {
            moved.push(chunk);
        } else {
            kept_lines += run.lines;
            kept.push(chunk);
        }
    }
    file.set_len(valid.base_bytes)?;
    file.seek(SeekFrom::Start(valid.base_bytes))?;
    for chunk in &kept {
        valid.out.write_all(chunk)?;
    }
    valid.new_lines = kept_lines;
    for chunk in &moved {
        for l in chunk.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            train.line(l)?;
        }
    }
    Ok(vec![pick])
}

/// When valid.jsonl would hold fewer than a batch of lines but there is
/// enough data for two, moves whole sessions of this run from train to
/// valid (lowest split point first, so the choice is deterministic).
fn ensure_valid_batch(
    train: &mut FileOut,
    valid: &mut FileOut,
    runs: &mut [TrainRun],
) -> Result<Vec<String>> {
    let valid_total = valid.base_lines + valid.new_lines;
    let total = valid_total + train.base_lines + train.new_lines;
    // A full batch when there is enough data for two; else at least one
    // session, so that both splits hold data.
    let want = if total >= 2 * MIN_VALID_LINES {
        MIN_VALID_LINES
    } else {
        1
    };
    if valid_total >= want || total < 2 || runs.is_empty() {
        return Ok(Vec::new());
    }
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by(|&a, &b| {
        runs[a]
            .point
            .total_cmp(&runs[b].point)
            .then(runs[a].session.cmp(&runs[b].session))
    });
    let mut need = want - valid_total;
    let mut moving = vec![false; runs.len()];
    for (moved_runs, i) in order.into_iter().enumerate() {
        if need == 0 || (train.base_lines == 0 && moved_runs + 1 == runs.len()) {
            // Done, or train would be left empty.
            break;
        }
        moving[i] = true;
        need = need.saturating_sub(runs[i].lines);
    }
    // Rewrite this run's part of train without the moved sessions, and
    // append those to valid.
    train.out.flush()?;
    let file = train.out.get_mut();
    let mut chunks = Vec::with_capacity(runs.len());
    for run in runs.iter() {
        let mut chunk = vec![0; (run.end - run.start) as usize];
        file.seek(SeekFrom::Start(run.start))?;
        file.read_exact(&mut chunk)?;
        chunks.push(chunk);
    }
    file.set_len(train.base_bytes)?;
    file.seek(SeekFrom::Start(train.base_bytes))?;
    let mut moved = Vec::new();
    let mut kept_lines = 0;
    for ((run, &mv), chunk) in runs.iter().zip(&moving).zip(&chunks) {
        if mv {
            for l in chunk.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                valid.line(l)?;
            }
            moved.push(run.session.clone());
        } else {
            train.out.write_all(chunk)?;
            kept_lines += run.lines;
        }
    }
    train.new_lines = kept_lines;
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similar_ids_split_near_the_fraction() {
        let valid = (0..1000)
            .filter(|i| split_point(&format!("nexus-world-{i:04}")) < 0.05)
            .count();
        assert!((30..=70).contains(&valid), "{valid} of 1000 below 0.05");
    }

    #[test]
    fn hash_is_stable() {
        let p = split_point("nexus-world-0001");
        assert!((0.0..1.0).contains(&p));
    }

    /// Writes `lines` lines for each session into a fresh directory export
    /// and returns the sessions found in train and valid, and the result.
    fn split(
        sessions: &[String],
        lines: usize,
        fraction: f64,
    ) -> (Vec<String>, Vec<String>, Written) {
        let dir = tempfile::tempdir().unwrap();
        let dest = Dest::Dir(dir.path().to_path_buf());
        let mut out = Output::open(&dest, None, fraction).unwrap();
        for s in sessions {
            for k in 0..lines {
                out.line(s, format!("{s} {k}").as_bytes()).unwrap();
            }
        }
        let w = out.finish(&|_| Ok(b"{}".to_vec())).unwrap().unwrap();
        let read = |name: &str| -> Vec<String> {
            let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
            let mut ids: Vec<String> = text
                .lines()
                .map(|l| l.split(' ').next().unwrap().to_string())
                .collect();
            ids.dedup();
            ids
        };
        (read("train.jsonl"), read("valid.jsonl"), w)
    }

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("nexus-world-{i:04}")).collect()
    }

    #[test]
    fn each_session_goes_whole_to_the_side_its_hash_picks() {
        let sessions = ids(200);
        let (train, valid, w) = split(&sessions, 3, 0.1);
        let want: Vec<String> = sessions
            .iter()
            .filter(|s| split_point(s) < 0.1)
            .cloned()
            .collect();
        assert!(want.len() >= 2, "{} valid sessions", want.len());
        assert_eq!(valid, want);
        assert_eq!(train.len() + valid.len(), 200, "no session on both sides");
        assert!(w.forced_valid.is_empty() && w.forced_train.is_empty());
        assert_eq!(w.new_lines, 600);
        let lines: Vec<(&str, u64)> = w.files.iter().map(|(n, c)| (n.as_str(), c.lines)).collect();
        assert_eq!(
            lines,
            [
                ("train.jsonl", 3 * train.len() as u64),
                ("valid.jsonl", 3 * valid.len() as u64)
            ]
        );
    }

    #[test]
    fn an_empty_valid_side_gets_a_batch_of_whole_sessions_lowest_split_point_first() {
        let sessions = ids(10);
        let (train, valid, w) = split(&sessions, 1, 0.0);
        let mut by_point = sessions.clone();
        by_point.sort_by(|a, b| split_point(a).total_cmp(&split_point(b)));
        let mut want = by_point[..MIN_VALID_LINES as usize].to_vec();
        want.sort();
        assert_eq!(valid, want);
        assert_eq!(w.forced_valid.len(), MIN_VALID_LINES as usize);
        assert_eq!(train.len(), 10 - MIN_VALID_LINES as usize);

        // Too little data for a batch: one session, and train keeps the rest.
        let (train, valid, w) = split(&ids(3), 1, 0.0);
        assert_eq!((train.len(), valid.len(), w.forced_valid.len()), (2, 1, 1));
    }

    #[test]
    fn train_is_never_left_empty_while_valid_holds_several_sessions() {
        let (train, valid, w) = split(&ids(5), 2, 0.999_999);
        assert!(!train.is_empty(), "train is empty");
        assert_eq!(train.len() + valid.len(), 5);
        assert_eq!(w.forced_train.len(), train.len());
    }
}
