//! `forget`: removes sessions from a cumulative export and keeps them out
//! of every later run of its state.
//!
//! Rules:
//! - Only the output the state belongs to is touched (its recorded
//!   identity must name the same `--out`), under the state's run lock, so
//!   no export runs meanwhile. Hermes's stores are never opened.
//! - A line belongs to the session in its `meta.session`; `--before WHEN`
//!   also removes every line whose first turn (`meta.first`) is earlier,
//!   or unknown (later exports leave untimed turns out once a cut-off is
//!   set, as they cannot tell on which side of it they fall).
//!   A line without `meta` cannot be attributed: the command refuses.
//! - Ids that no line, pending entry or covered session of the state
//!   knows are refused (a typo would otherwise forget nothing), unless
//!   `--force`.
//! - Order of the commits: the ids are recorded in the state first (from
//!   then on no run exports them, and running `forget` again finishes the
//!   job); then each file is rewritten atomically; then the state records
//!   the files' new committed lengths and tails. The manifest and the
//!   dataset card of a directory output are brought up to date last.
//! - What was removed is listed on stdout (the command's product), one
//!   line per file; the summary goes to stderr.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::config::ForgetConfig;
use crate::exit::{self, Failure};
use crate::lock::RunLock;
use crate::safe_io::{self, FileDest};
use crate::sink::{persist, temp_beside};
use crate::state::{Committed, RunState};

fn usage(msg: String) -> anyhow::Error {
    Failure::new(exit::USAGE, msg).into()
}

fn refuse(msg: String) -> anyhow::Error {
    Failure::new(exit::ERROR, msg).into()
}

/// One cumulative file as read back.
struct FileLines {
    name: String,
    path: PathBuf,
    /// Each committed line with its session and first turn time.
    lines: Vec<(Vec<u8>, String, Option<f64>)>,
}

pub fn run(args: &ForgetConfig) -> Result<u8> {
    let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
    let before = args
        .before
        .as_deref()
        .map(|s| crate::config::parse_when(s, now))
        .transpose()
        .map_err(|e| usage(format!("--before: {e:#}")))?;
    if args.sessions.is_empty() && before.is_none() {
        return Err(usage(
            "name the sessions to forget, or --before WHEN".to_string(),
        ));
    }
    let (dir, single) = output_of(&args.out)?;
    let out_path = dir.clone().or(single.clone()).expect("one of them");
    let state_path =
        safe_io::resolve_links(&args.state).map_err(|e| usage(format!("--state: {e}")))?;
    if !state_path.is_file() {
        return Err(usage(format!(
            "--state {} does not exist; forget works on a cumulative export kept with --state",
            args.state.display()
        )));
    }
    let _lock = RunLock::acquire(&state_path)?;
    let mut st = RunState::load(&state_path)?;
    check_identity(&st, &state_path, &out_path)?;

    // Read every committed line (a killed run's uncommitted tail goes too,
    // as the next export would cut it).
    let mut files = Vec::new();
    for (name, committed) in &st.outputs {
        let path = match (&dir, &single) {
            (Some(d), _) => d.join(name),
            (None, Some(p)) => p.clone(),
            _ => unreachable!("one of them"),
        };
        files.push(read_committed(name, &path, committed)?);
    }
    let wanted: BTreeSet<&str> = args.sessions.iter().map(String::as_str).collect();
    check_known(&st, &files, &wanted, args.force)?;

    // First commit: the ids and the cut-off, so that no run exports them.
    let ids: Vec<String> = wanted.iter().map(|s| s.to_string()).collect();
    st.curation.forgotten.extend(ids.iter().cloned());
    if let Some(b) = before {
        st.curation.forgotten_before = Some(st.curation.forgotten_before.map_or(b, |a| a.max(b)));
    }
    for id in &ids {
        st.pending.remove(id);
    }
    st.save(&state_path)?;

    let removed = remove_lines(&files, &wanted, before, &mut st)?;
    st.save(&state_path)?;
    if let Some(d) = &dir {
        update_manifest(d, &st)?;
    }
    report_removed(&removed, ids.len(), before, args.quiet)?;
    Ok(exit::OK)
}

/// `--out` as a directory or a regular file (stdout and special files keep
/// nothing to forget).
fn output_of(out: &str) -> Result<(Option<PathBuf>, Option<PathBuf>)> {
    match out {
        "-" => Err(usage(
            "--out -: stdout keeps nothing to forget; name the cumulative FILE or DIR/".into(),
        )),
        o if o.ends_with('/') || Path::new(o).is_dir() => Ok((Some(PathBuf::from(o)), None)),
        o => match safe_io::resolve_out_file(Path::new(o))
            .map_err(|e| usage(format!("--out {o}: {e}")))?
        {
            FileDest::Regular(p) => Ok((None, Some(p))),
            FileDest::Special(_) => Err(usage(format!(
                "--out {o} is a special file; it keeps nothing to forget"
            ))),
        },
    }
}

/// Refuses a state file that belongs to another output, or to none yet.
fn check_identity(st: &RunState, state_path: &Path, out_path: &Path) -> Result<()> {
    let out_id = safe_io::canonical_ish(out_path).display().to_string();
    match &st.identity {
        Some(id) if id.out == out_id => Ok(()),
        Some(id) => Err(refuse(format!(
            "state file {} belongs to the export {}, not to {}; nothing was changed",
            state_path.display(),
            id.describe(),
            out_path.display()
        ))),
        None => Err(refuse(format!(
            "state file {} has no committed output yet; nothing was changed",
            state_path.display()
        ))),
    }
}

/// Refuses ids that no line and no state entry knows, unless `force`.
fn check_known(
    st: &RunState,
    files: &[FileLines],
    wanted: &BTreeSet<&str>,
    force: bool,
) -> Result<()> {
    let mut known: BTreeSet<&str> = st.pending.keys().map(String::as_str).collect();
    known.extend(st.covered_turns.keys().map(String::as_str));
    known.extend(st.curation.forgotten.iter().map(String::as_str));
    for f in files {
        known.extend(f.lines.iter().map(|l| l.1.as_str()));
    }
    let unknown: Vec<&str> = wanted.difference(&known).copied().collect();
    if unknown.is_empty() || force {
        return Ok(());
    }
    Err(usage(format!(
        "no line and no state entry knows the session(s) {}; nothing was changed (check the ids, or pass --force to record them anyway)",
        unknown.join(", ")
    )))
}

/// Rewrites each file without the lines of `wanted` sessions (and, with
/// `before`, those whose first turn is earlier or unknown), updating the
/// state's committed lengths; returns the 1-based numbers removed per file.
fn remove_lines(
    files: &[FileLines],
    wanted: &BTreeSet<&str>,
    before: Option<f64>,
    st: &mut RunState,
) -> Result<BTreeMap<String, Vec<usize>>> {
    let mut removed = BTreeMap::new();
    for f in files {
        let mut kept = Vec::new();
        let mut gone = Vec::new();
        for (n, (bytes, session, first)) in f.lines.iter().enumerate() {
            // A line without a time goes too, as later exports leave out
            // untimed turns once a cut-off is set.
            let by_time = before.is_some_and(|b| first.is_none_or(|t| t < b));
            if wanted.contains(session.as_str()) || by_time {
                gone.push(n + 1);
            } else {
                kept.push(bytes.as_slice());
            }
        }
        let torn = st
            .outputs
            .get(&f.name)
            .is_some_and(|c| std::fs::metadata(&f.path).is_ok_and(|m| m.len() != c.bytes));
        // A killed run's uncommitted tail is dropped all the same.
        if !gone.is_empty() || torn {
            let committed = rewrite(&f.path, &kept)?;
            st.outputs.insert(f.name.clone(), committed);
        }
        removed.insert(f.name.clone(), gone);
    }
    Ok(removed)
}

/// The removed line numbers per file on stdout; the summary on stderr.
fn report_removed(
    removed: &BTreeMap<String, Vec<usize>>,
    ids: usize,
    before: Option<f64>,
    quiet: bool,
) -> Result<()> {
    let mut stdout = crate::sink::Stdout::new();
    let mut total = 0;
    for (name, gone) in removed {
        total += gone.len();
        let list: Vec<String> = gone.iter().map(|n| n.to_string()).collect();
        let line = format!(
            "{name}: {} line(s) removed{}{}",
            gone.len(),
            if gone.is_empty() { "" } else { ": " },
            list.join(" ")
        );
        stdout.line(line.as_bytes())?;
    }
    stdout.finish()?;
    if !quiet {
        let cut = match before {
            Some(b) => format!(
                " and every turn before {}",
                crate::config::iso_time(Some(b))
                    .as_str()
                    .unwrap_or_default()
            ),
            None => String::new(),
        };
        eprintln!(
            "hermes-harvest: forgot {ids} session(s){cut}; {total} line(s) removed; the state keeps them out of every later run"
        );
    }
    Ok(())
}

/// The committed lines of one output file, each with its session.
fn read_committed(name: &str, path: &Path, committed: &Committed) -> Result<FileLines> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata()?.len();
    crate::output::check_committed(&mut file, path, len, committed)?;
    let mut bytes = Vec::new();
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0))?;
    file.take(committed.bytes).read_to_end(&mut bytes)?;
    let mut lines = Vec::new();
    for (n, line) in bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        let v: Value = serde_json::from_slice(line)
            .with_context(|| format!("{} line {}: not JSON", path.display(), n + 1))?;
        let Some(session) = v["meta"]["session"].as_str() else {
            return Err(refuse(format!(
                "{} line {} has no meta.session (exported with --no-meta or --target openai), so its session cannot be told; nothing was changed",
                path.display(),
                n + 1
            )));
        };
        let first = v["meta"]["first"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_micros() as f64 / 1e6);
        lines.push((line.to_vec(), session.to_string(), first));
    }
    Ok(FileLines {
        name: name.to_string(),
        path: path.to_path_buf(),
        lines,
    })
}

/// Replaces `path` atomically with `lines`; returns what it now holds.
fn rewrite(path: &Path, lines: &[&[u8]]) -> Result<Committed> {
    let mut tmp = temp_beside(path)?;
    for l in lines {
        tmp.write_all(l)?;
        tmp.write_all(b"\n")?;
    }
    tmp.flush()?;
    let bytes = tmp.as_file().metadata()?.len();
    let tail = crate::output::tail_hash(tmp.as_file_mut(), bytes)?;
    persist(tmp, path)?;
    Ok(Committed {
        bytes,
        lines: lines.len() as u64,
        tail,
    })
}

/// Brings the manifest's file figures and the dataset card up to date.
fn update_manifest(dir: &Path, st: &RunState) -> Result<()> {
    let path = dir.join("manifest.json");
    let Ok(Some(bytes)) = safe_io::read_optional(&path, safe_io::MAX_SETTINGS_BYTES) else {
        return Ok(());
    };
    let Ok(mut m) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(());
    };
    for (name, c) in &st.outputs {
        m["split"]["files"][name] = serde_json::json!({"lines": c.lines, "bytes": c.bytes});
    }
    if m["curation"].is_object() {
        m["curation"]["forgotten_sessions"] = st.curation.forgotten.len().into();
        m["curation"]["forgotten_before"] = crate::config::iso_time(st.curation.forgotten_before);
    }
    let mut tmp = temp_beside(&path)?;
    tmp.write_all(&serde_json::to_vec_pretty(&m)?)?;
    persist(tmp, &path)?;
    crate::card::write(dir, &m)?;
    Ok(())
}
