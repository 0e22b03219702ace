//! `validate DIR/ --state FILE`: the state file must have written the
//! directory (its output identity names it) and committed each split file
//! as it is: the same byte length, line count and tail hash. Bytes past
//! the committed length are what a run killed before its commit appended.
//!
//! The cumulative figures: the manifest's `dataset` is the state's running
//! sums; when the state has the figures of every line (see
//! `RunState::figures`), one per committed line, they add up to the sums'
//! tokens and, unless some lines have none (a state upgraded from before
//! version 4: `RunState::unfigured`), their channels agree with the lines'
//! `meta` and they add up to the sums' lines and signals.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use serde_json::Value;

use super::Problems;
use crate::dataset::Dataset;
use crate::state::{Committed, RunState};

pub fn check(
    dir: &Path,
    state: &Path,
    (files, manifest): (&[FileFacts], Option<&Value>),
    problems: &mut Problems,
) -> Result<()> {
    let label = state.display().to_string();
    if !state.exists() {
        let what = "no such state file: a first run killed before its commit leaves none";
        return problems.add(&label, None, what);
    }
    let st = match RunState::load(state) {
        Ok(st) => st,
        Err(e) => return problems.add(&label, None, &format!("{e:#}")),
    };
    let here = crate::safe_io::canonical_ish(dir).display().to_string();
    match &st.identity {
        Some(id) if id.out != here => {
            let what = format!("belongs to {}, not to this directory", id.describe());
            return problems.add(&label, None, &what);
        }
        None if files.iter().any(|f| f.bytes > 0) => {
            return problems.add(&label, None, "has committed no output yet, but the directory holds lines: this state did not write it");
        }
        _ => {}
    }
    for f in files {
        let path = dir.join(&f.name);
        let file_label = path.display().to_string();
        match st.outputs.get(&f.name) {
            Some(c) => {
                if let Some(what) = disagreement(&path, f, c)? {
                    problems.add(&file_label, None, &what)?;
                }
            }
            None if f.bytes > 0 => {
                let what = format!("{label} committed no such file: this state did not write it");
                problems.add(&file_label, None, &what)?;
            }
            None => {}
        }
    }
    for (name, c) in &st.outputs {
        if c.bytes > 0 && !files.iter().any(|f| &f.name == name) {
            let what = format!(
                "missing, but {label} committed {} lines ({} bytes) to it",
                c.lines, c.bytes
            );
            problems.add(&dir.join(name).display().to_string(), None, &what)?;
        }
    }
    if let Some(m) = manifest {
        let ours = serde_json::to_value(st.dataset.doc())?;
        if m["dataset"] != ours {
            let what =
                format!("its dataset figures differ from the manifest's: the state holds {ours}");
            problems.add(&label, None, &what)?;
        }
    }
    for what in figures_mismatches(&st, files) {
        problems.add(&label, None, &what)?;
    }
    Ok(())
}

/// Where the state's figures of each line disagree with the files and
/// with its running sums (nothing when they do not cover every file).
fn figures_mismatches(st: &RunState, files: &[FileFacts]) -> Vec<String> {
    if !files.iter().all(|f| st.figures_cover(&f.name, f.lines)) {
        return Vec::new();
    }
    // Lines without figures (an upgraded state's) count in the lines per
    // channel and signal, never in the tokens.
    let whole = st.unfigured.values().all(|n| *n == 0);
    let mut sums = Dataset::default();
    let mut per_channel: BTreeMap<String, u64> = BTreeMap::new();
    for f in st.figures.values().flatten() {
        sums.add(f);
    }
    for f in files {
        for (k, n) in &f.per_channel {
            *per_channel.entry(k.clone()).or_default() += n;
        }
    }
    let mut out = Vec::new();
    if whole && files.iter().all(|f| f.without_meta == 0) && per_channel != sums.samples {
        out.push(format!(
            "the figures it keeps of each line give {:?} lines per channel, the lines' meta {per_channel:?}",
            sums.samples
        ));
    }
    let counts = [
        ("lines per channel", &sums.samples, &st.dataset.samples),
        ("pairs per signal", &sums.signals, &st.dataset.signals),
    ];
    let compared = counts
        .into_iter()
        .filter(|_| whole)
        .map(|(what, a, b)| (what, json(a), json(b)))
        .chain([("tokens", json(&sums.tokens), json(&st.dataset.tokens))]);
    for (what, a, b) in compared {
        if a != b {
            out.push(format!(
                "the figures it keeps of each line add up to {what} {a}, its running sums say {b}"
            ));
        }
    }
    out
}

fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// How a split file differs from what the state committed, if it does.
fn disagreement(path: &Path, f: &FileFacts, c: &Committed) -> Result<Option<String>> {
    if f.bytes < c.bytes {
        return Ok(Some(format!(
            "{} bytes, shorter than the {} the state committed: changed since (by hand, or another tool)",
            f.bytes, c.bytes
        )));
    }
    if c.bytes > 0 {
        let mut file = std::fs::File::open(path)?;
        if crate::state::tail_hash(&mut file, c.bytes)? != c.tail {
            return Ok(Some(
                "its committed lines differ from what the state recorded (their tail hash): changed since"
                    .to_string(),
            ));
        }
    }
    if f.bytes > c.bytes {
        return Ok(Some(format!(
            "{} bytes past the {} the state committed: a run was killed before its commit (the next export with this state finishes it)",
            f.bytes - c.bytes,
            c.bytes
        )));
    }
    if f.lines != c.lines {
        return Ok(Some(format!(
            "{} lines, the state committed {}",
            f.lines, c.lines
        )));
    }
    Ok(None)
}

/// What one split file holds, for the checks across files.
#[derive(Debug, Default, Clone)]
pub struct FileFacts {
    pub name: String,
    pub lines: u64,
    pub bytes: u64,
    pub per_channel: BTreeMap<String, u64>,
    pub per_signal: BTreeMap<String, u64>,
    /// Lines without `meta` (no unit, channel or signal to tell).
    pub without_meta: u64,
    /// The earliest `meta.first` and latest `meta.last` (RFC 3339 UTC,
    /// which sorts as text).
    pub first: Option<String>,
    pub last: Option<String>,
}

impl FileFacts {
    pub(super) fn saw(&mut self, first: Option<&str>, last: Option<&str>) {
        if let Some(t) = first.filter(|t| self.first.as_deref().is_none_or(|f| *t < f)) {
            self.first = Some(t.to_string());
        }
        if let Some(t) = last.filter(|t| self.last.as_deref().is_none_or(|l| *t > l)) {
            self.last = Some(t.to_string());
        }
    }
}
