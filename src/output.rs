//! The export destination: stdout, one JSONL file, or a directory with
//! `train.jsonl`, `valid.jsonl` and `manifest.json`.
//!
//! Files are built in temporary files beside their targets and renamed
//! into place only when the run succeeds, so a crash or kill leaves the
//! previous files intact. With `--state` the files are cumulative: a run
//! starts from the committed bytes of each file (see `state`) and appends
//! only what is new.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tempfile::TempPath;

use crate::config::OutTarget;
use crate::sink::{Stdout, persist, sync_dir, temp_beside};
use crate::state::RunState;

/// Trainers' usual batch size: mlx-lm refuses a split with fewer rows.
pub const MIN_VALID_LINES: u64 = 4;

/// FNV-1a: a stable hash for the session split, the same on every machine
/// and in every version.
pub fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A session's place in [0, 1) for the split.
fn split_point(session: &str) -> f64 {
    (stable_hash(session) >> 11) as f64 / (1u64 << 53) as f64
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
    /// Snapshot mode (`keep` is `None`): a temporary file beside `target`.
    /// Cumulative mode: `target` itself, cut back to its committed
    /// `keep = (bytes, lines)` (dropping the tail a killed run may have
    /// left) and appended to.
    fn open(target: &Path, name: &str, keep: Option<(u64, u64)>) -> Result<FileOut> {
        let (file, temp, base_bytes, base_lines) = match keep {
            None => {
                let (file, path) = temp_beside(target)?.into_parts();
                (file, Some(path), 0, 0)
            }
            Some((bytes, lines)) => {
                let mut opts = OpenOptions::new();
                opts.read(true).write(true).create(true).truncate(false);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                let mut file = opts
                    .open(target)
                    .with_context(|| format!("opening {}", target.display()))?;
                let len = file.metadata()?.len();
                if len < bytes {
                    anyhow::bail!(
                        "{} holds {len} bytes but the state file committed {bytes}: it was changed by someone else; restore it or start a new state file",
                        target.display()
                    );
                }
                file.set_len(bytes)?;
                file.seek(SeekFrom::End(0))?;
                (file, None, bytes, lines)
            }
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
    /// Returns (name, bytes, lines) as now on disk.
    fn commit(self) -> Result<(String, u64, u64)> {
        let target = self.target;
        let file = self
            .out
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", target.display()))?;
        file.sync_all()
            .with_context(|| format!("syncing {}", target.display()))?;
        let bytes = file.metadata()?.len();
        drop(file);
        if let Some(temp) = self.temp {
            temp.persist(&target)
                .with_context(|| format!("replacing {}", target.display()))?;
        }
        sync_dir(&target);
        Ok((self.name, bytes, self.base_lines + self.new_lines))
    }
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
    train_runs: Vec<TrainRun>,
    current: Option<(String, u64, u64)>, // session, start offset, lines so far
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
    /// file name → (bytes, lines) after this run.
    pub files: Vec<(String, u64, u64)>,
    pub forced_valid: Vec<String>,
}

impl Output {
    pub fn open(
        target: &OutTarget,
        state: Option<&RunState>,
        valid_fraction: f64,
    ) -> Result<Output> {
        let keep = |name: &str| {
            state.and_then(|s| Some((*s.output_bytes.get(name)?, *s.output_lines.get(name)?)))
        };
        let kind = match target {
            OutTarget::Stdout => Kind::Stdout(Stdout::new()),
            OutTarget::File(path) => {
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("out.jsonl")
                    .to_string();
                Kind::File(FileOut::open(path, &name, keep(&name))?)
            }
            OutTarget::Dir(dir) => {
                if !dir.exists() {
                    let mut b = std::fs::DirBuilder::new();
                    b.recursive(true);
                    #[cfg(unix)]
                    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
                    b.create(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                Kind::Dir {
                    dir: dir.clone(),
                    train: FileOut::open(
                        &dir.join("train.jsonl"),
                        "train.jsonl",
                        keep("train.jsonl"),
                    )?,
                    valid: FileOut::open(
                        &dir.join("valid.jsonl"),
                        "valid.jsonl",
                        keep("valid.jsonl"),
                    )?,
                }
            }
        };
        Ok(Output {
            kind,
            cumulative: state.is_some(),
            valid_fraction,
            forced_valid: state.map(|s| s.forced_valid.clone()).unwrap_or_default(),
            train_runs: Vec::new(),
            current: None,
        })
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir { .. })
    }

    fn is_valid(&self, session: &str) -> bool {
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
                    return v.line(line);
                }
                if self.current.as_ref().is_none_or(|(s, _, _)| s != session) {
                    Self::close_run(&mut self.current, &mut self.train_runs, train)?;
                    self.current = Some((session.to_string(), train.offset()?, 0));
                }
                if let Some(cur) = self.current.as_mut() {
                    cur.2 += 1;
                }
                train.line(line)
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
                sink.finish()?;
                Ok(Some(Written::default()))
            }
            Kind::File(f) => {
                if self.cumulative && nothing_new {
                    return Ok(None);
                }
                let new_lines = f.new_lines;
                Ok(Some(Written {
                    new_lines,
                    files: vec![f.commit()?],
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
                let moved = ensure_valid_batch(&mut train, &mut valid, &mut self.train_runs)?;
                self.forced_valid.extend(moved);
                let mut w = Written {
                    new_lines: train.new_lines + valid.new_lines,
                    forced_valid: self.forced_valid.clone(),
                    ..Written::default()
                };
                for f in [train, valid] {
                    w.files.push(f.commit()?);
                }
                let target = dir.join("manifest.json");
                let mut tmp = temp_beside(&target)?;
                tmp.write_all(&manifest(&w)?)?;
                persist(tmp, &target)?;
                Ok(Some(w))
            }
        }
    }
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
    if valid_total >= MIN_VALID_LINES || total < 2 * MIN_VALID_LINES || runs.is_empty() {
        return Ok(Vec::new());
    }
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by(|&a, &b| {
        runs[a]
            .point
            .total_cmp(&runs[b].point)
            .then(runs[a].session.cmp(&runs[b].session))
    });
    let mut need = MIN_VALID_LINES - valid_total;
    let mut moving = vec![false; runs.len()];
    for i in order {
        if need == 0 {
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
    fn hash_is_stable() {
        assert_eq!(stable_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash("a"), 0xaf63_dc4c_8601_ec8c);
        let p = split_point("nexus-world-0001");
        assert!((0.0..1.0).contains(&p));
    }
}
