//! `validate DIR/ --state FILE`: the state file must have written the
//! directory (its output identity names it) and committed each split file
//! as it is: the same byte length, line count and tail hash. Bytes past
//! the committed length are what a run killed before its commit appended.

use std::path::Path;

use anyhow::Result;

use super::Problems;
use super::dir::FileFacts;
use crate::state::{Committed, RunState};

pub fn check(dir: &Path, state: &Path, files: &[FileFacts], problems: &mut Problems) -> Result<()> {
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
    Ok(())
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
        if crate::output::tail_hash(&mut file, c.bytes)? != c.tail {
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
