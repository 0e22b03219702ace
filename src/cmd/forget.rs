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
//! - `--before` never loses a turn from the cut on: a removed line that
//!   trained on turns at or after the cut (`meta.last`; a line without
//!   `meta.first` or without `meta`: any) gives them back. The state
//!   records, per session, the span from the cut to the line's last turn,
//!   or its untimed turns (`RunState::reopened`, in the same commit as the
//!   cut-off), and the next export takes them as new again and writes them
//!   once, without context from before the cut (the export never uses a
//!   turn before the cut as context or as a pair's history). The dry run
//!   and the summary count those lines.
//!   A line without `meta` (`--no-meta`, `--target openai`) is attributed
//!   through the state's index of the sessions of such lines; without one
//!   (an earlier version wrote them) the command refuses.
//! - Ids that no line, pending entry or covered session of the state
//!   knows are refused (a typo would otherwise forget nothing), unless
//!   `--force`.
//! - A two-phase commit (see `state`): each file's new contents are
//!   written and synced to a staged file beside it; then the state is
//!   saved at once with the ids, the cut-off and the journal of the staged
//!   files (from then on no run exports them); then the staged files are
//!   renamed over the files, and the state records the files' new
//!   committed lengths and tails. A kill before the state is saved changes
//!   nothing (the staged files are left over and removed by the next run). A kill at any point is
//!   finished by the next `forget` or export of the state, which complete a
//!   journal they find before anything else. `--dry-run` lists what would
//!   go and changes nothing (beyond finishing such a journal). The manifest (its `dataset`
//!   less the lines removed, see `stage_lines`) and the dataset card of a
//!   directory output are brought up to date last.
//! - The exact-duplicate fingerprints of the removed lines leave the state,
//!   and the near-duplicate keys they counted are given back.
//! - What was removed is listed on stdout (the command's product), one
//!   line per file; the summary goes to stderr.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::config::ForgetConfig;
use crate::curate::dedupe::HeldBack;
use crate::curate::dedupe::body_print;
use crate::exit::{self, Failure};
use crate::lock::RunLock;
use crate::safe_io::{self, FileDest};
use crate::sink::{persist, temp_beside};
use crate::state::{Committed, Reopened, RunState};

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
    /// Each line's `meta`.
    metas: Vec<Value>,
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
    let path_of = |name: &str| match (&dir, &single) {
        (Some(d), _) => d.join(name),
        _ => out_path.clone(),
    };
    // A killed forget is finished first.
    crate::state::finish_journal(&mut st, &state_path, &path_of)?;

    let files = read_files(&st, &state_path, &path_of, true)?;
    let given: BTreeSet<&str> = args.sessions.iter().map(String::as_str).collect();
    check_known(&st, &files, &given, args.force)?;
    // Any id of a lineage forgets the lineage (its root).
    let ids: BTreeSet<String> = given
        .iter()
        .map(|id| st.lineage.get(*id).cloned().unwrap_or(id.to_string()))
        .chain(given.iter().map(|id| id.to_string()))
        .collect();
    let wanted: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let (reopen, again) = before.map_or_else(Default::default, |b| {
        reopened(&files, (&wanted, &st.curation), b)
    });
    if args.dry_run {
        let gone = doomed(&files, &wanted, before);
        report_removed(&gone, (ids.len(), true), (before, again), args.quiet)?;
        return Ok(exit::OK);
    }

    // The ids, the cut-off and the journal of the staged files are
    // committed at once: from then on no run exports them, and any later
    // command finishes the rewrite.
    record(&mut st, &ids, before, reopen);
    let removed = stage_lines(
        &files,
        &|f, n| goes((&f.lines[n].1, f.lines[n].2), &wanted, before),
        &mut st,
    )?;
    st.dataset.forgotten_lines += removed.values().map(|g| g.len() as u64).sum::<u64>();
    crate::stall::point("forget-staged");
    st.save(&state_path)?;
    crate::stall::point("forget-journal");
    crate::state::finish_journal(&mut st, &state_path, &path_of)?;
    if let Some(d) = &dir {
        update_manifest(d, &st)?;
    }
    report_removed(&removed, (ids.len(), false), (before, again), args.quiet)?;
    Ok(exit::OK)
}

/// Records in the state what goes (the ids, the cut-off) and what the
/// next export writes again (`RunState::reopened`).
fn record(
    st: &mut RunState,
    ids: &BTreeSet<String>,
    before: Option<f64>,
    reopen: BTreeMap<String, Reopened>,
) {
    st.curation.forgotten.extend(ids.iter().cloned());
    if let Some(b) = before {
        st.curation.forgotten_before = Some(st.curation.forgotten_before.map_or(b, |a| a.max(b)));
    }
    for id in ids {
        st.pending.remove(id);
        st.reopened.remove(id);
    }
    st.curation.held_back.retain(|h| !ids.contains(&h.1));
    for (session, back) in reopen {
        st.reopened.entry(session).or_default().merge(back);
    }
}

/// Every committed line of every output file (a killed run's uncommitted
/// tail goes too, as the next export would cut it).
fn read_files(
    st: &RunState,
    state_path: &Path,
    path_of: &dyn Fn(&str) -> PathBuf,
    need_meta: bool,
) -> Result<Vec<FileLines>> {
    let interrupted = crate::state::inflight_path(state_path).exists();
    let mut files = Vec::new();
    for (name, committed) in &st.outputs {
        if !crate::state::plain_name(name) {
            return Err(refuse(format!(
                "state file {} names the output file {name:?}, which is not a plain file name; nothing was changed",
                state_path.display()
            )));
        }
        files.push(read_committed(
            name,
            &path_of(name),
            (committed, interrupted, need_meta),
            st.index.get(name),
        )?);
    }
    Ok(files)
}

/// Whether line `n` of a file goes: its session is forgotten, or (with
/// `before`) its first turn is earlier or unknown, as later exports leave
/// out untimed turns once a cut-off is set.
fn goes(
    (session, first): (&str, Option<f64>),
    wanted: &BTreeSet<&str>,
    before: Option<f64>,
) -> bool {
    wanted.contains(session) || before.is_some_and(|b| first.is_none_or(|t| t < b))
}

/// What `--before b` gives back: per session (not forgotten outright),
/// the turns of the lines that go although they trained on turns at or
/// after the cut, and how many (see [`Again`]). A line with times
/// gives the span `[b, last]` (`meta.last`, whole seconds, so up to the
/// second after it); one with `meta` but no time trained on turns without
/// a time of their own, which the export times by their session's start:
/// those (the cut-off judges them again). A line without `meta` gives
/// everything of its session from the cut on (all its file's lines go).
fn reopened(
    files: &[FileLines],
    (wanted, memory): (&BTreeSet<&str>, &crate::curate::Memory),
    b: f64,
) -> (BTreeMap<String, Reopened>, Again) {
    let mut out: BTreeMap<String, Reopened> = BTreeMap::new();
    let mut again = Again::default();
    for f in files {
        for (n, (_, session, first)) in f.lines.iter().enumerate() {
            if wanted.contains(session.as_str()) || !goes((session, *first), wanted, Some(b)) {
                continue;
            }
            let meta = &f.metas[n];
            let last = meta_time(meta, "last").or(*first);
            let back = match (meta.is_object(), last) {
                (false, _) => Reopened {
                    spans: vec![(b, f64::MAX)],
                    untimed: true,
                },
                (true, None) => Reopened {
                    spans: Vec::new(),
                    untimed: true,
                },
                (true, Some(last)) if last + 1.0 > b => Reopened {
                    spans: vec![(b, last + 1.0)],
                    untimed: false,
                },
                _ => continue,
            };
            out.entry(session.clone()).or_default().merge(back);
            again.lines += 1;
            let bytes = &f.lines[n].0;
            match crate::curate::dedupe::line_times(memory, body_print(bytes)) {
                Some(times) => again.turns += times.iter().flatten().filter(|t| **t >= b).count(),
                None => again.untold += 1,
            }
        }
    }
    (out, again)
}

/// What `--before` gives back: the removed lines that held turns from the
/// cut on, those turns (by the times the state recorded per line), and
/// the lines whose turn times it did not record (an earlier version wrote
/// them).
#[derive(Debug, Default, Clone, Copy)]
struct Again {
    lines: usize,
    turns: usize,
    untold: usize,
}

/// A time of a line's `meta` (`first`, `last`) in epoch seconds.
fn meta_time(meta: &Value, key: &str) -> Option<f64> {
    meta[key]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_micros() as f64 / 1e6)
}

/// The 1-based numbers of the lines that go, per file.
fn doomed(
    files: &[FileLines],
    wanted: &BTreeSet<&str>,
    before: Option<f64>,
) -> BTreeMap<String, Vec<usize>> {
    files
        .iter()
        .map(|f| {
            let gone = (f.lines.iter().enumerate())
                .filter(|(_, (_, s, t))| goes((s, *t), wanted, before))
                .map(|(n, _)| n + 1)
                .collect();
            (f.name.clone(), gone)
        })
        .collect()
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
    known.extend(st.lineage.keys().map(String::as_str));
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

/// Stages each file without the lines that go in the state's journal,
/// takes the removed lines out of the dataset's sums (their figures; from
/// a state without figures, the lines per channel and signal are recounted
/// from the `meta` of the lines that remain), recounts the time range and
/// drops the removed lines' fingerprints; returns the 1-based numbers
/// removed per file.
fn stage_lines(
    files: &[FileLines],
    goes: &dyn Fn(&FileLines, usize) -> bool,
    st: &mut RunState,
) -> Result<BTreeMap<String, Vec<usize>>> {
    let mut removed = BTreeMap::new();
    let mut metas = Vec::new();
    let mut all_meta = true;
    let mut freed = Vec::new();
    // Figures are subtracted only when every file has one per line (its
    // unfigured lines, whose tokens the sums never held, aside).
    let figured = files
        .iter()
        .all(|f| st.figures_cover(&f.name, f.lines.len() as u64));
    for f in files {
        let mut kept = Vec::new();
        let mut gone = Vec::new();
        let mut figures = Vec::new();
        let old = st.figures.get(&f.name).filter(|_| figured);
        let unfigured = st.unfigured.get(&f.name).copied().unwrap_or(0) as usize;
        let mut still_unfigured = 0;
        for (n, (bytes, _, _)) in f.lines.iter().enumerate() {
            let fig = old.and_then(|v| n.checked_sub(unfigured).map(|k| v[k]));
            if goes(f, n) {
                gone.push(n + 1);
                freed.extend(forget_print(&mut st.curation, bytes));
                let meta = |k: &str| f.metas[n][k].as_str();
                match (&fig, meta("channel")) {
                    (Some(fig), _) => st.dataset.remove(fig),
                    (None, Some(c)) if figured => st.dataset.remove_line(c, meta("signal")),
                    _ => {}
                }
            } else {
                kept.push(bytes.as_slice());
                metas.push(&f.metas[n]);
                figures.extend(fig);
                still_unfigured += usize::from(n < unfigured);
            }
        }
        if figured && !f.lines.is_empty() {
            st.figures.insert(f.name.clone(), figures);
            st.unfigured.insert(f.name.clone(), still_unfigured as u64);
            st.unfigured.retain(|_, n| *n > 0);
        }
        if st.index.contains_key(&f.name) {
            let mut runs: Vec<(String, u64)> = Vec::new();
            for (n, (_, session, _)) in f.lines.iter().enumerate() {
                if goes(f, n) {
                    continue;
                }
                match runs.last_mut() {
                    Some((s, k)) if s == session => *k += 1,
                    _ => runs.push((session.clone(), 1)),
                }
            }
            st.index.insert(f.name.clone(), runs);
        }
        let torn = st
            .outputs
            .get(&f.name)
            .is_some_and(|c| std::fs::metadata(&f.path).is_ok_and(|m| m.len() != c.bytes));
        // A killed run's uncommitted tail is dropped all the same.
        if !gone.is_empty() || torn {
            let new = stage(&f.path, &kept)?;
            st.dataset.lines.insert(f.name.clone(), new.lines);
            st.journal.push(crate::state::Staged {
                name: f.name.clone(),
                new,
            });
        }
        all_meta &= f.metas.iter().all(Value::is_object);
        removed.insert(f.name.clone(), gone);
    }
    if all_meta {
        st.dataset.recount(metas, !figured);
    }
    give_back(st, freed);
    Ok(removed)
}

/// Drops the exact-duplicate fingerprint of a removed line (its bytes
/// without `meta`, as they were fingerprinted) and gives back the
/// near-duplicate keys it counted; returns the exchanges the cap held
/// back under those keys.
fn forget_print(memory: &mut crate::curate::Memory, line: &[u8]) -> Vec<HeldBack> {
    let less = crate::curate::dedupe::forget_line(memory, body_print(line));
    crate::curate::dedupe::release_held(memory, &less)
}

/// Gives exchanges the near-duplicate cap held back, under keys a removed
/// line counted toward, back to the next export, which judges them under
/// its cap again: a state.db turn as pending by its row, another store's
/// by its time. Those of forgotten sessions stay out.
fn give_back(st: &mut RunState, held: Vec<HeldBack>) {
    for HeldBack(_, session, turn, time) in held {
        if st.curation.forgotten.contains(&session) {
            continue;
        }
        match turn {
            Some(key) => {
                let mut p = crate::state::Pending::default();
                p.add_turn(key, time, false);
                st.pending.entry(session).or_default().merge(p);
            }
            None => {
                let back = match time {
                    Some(t) => Reopened {
                        spans: vec![(t, t.next_up())],
                        untimed: false,
                    },
                    None => Reopened {
                        spans: Vec::new(),
                        untimed: true,
                    },
                };
                st.reopened.entry(session).or_default().merge(back);
            }
        }
    }
}

/// The removed line numbers per file on stdout; the summary on stderr.
fn report_removed(
    removed: &BTreeMap<String, Vec<usize>>,
    (ids, dry_run): (usize, bool),
    (before, again): (Option<f64>, Again),
    quiet: bool,
) -> Result<()> {
    let verb = if dry_run {
        "would be removed"
    } else {
        "removed"
    };
    let mut stdout = crate::sink::Stdout::new();
    let mut total = 0;
    for (name, gone) in removed {
        total += gone.len();
        let list: Vec<String> = gone.iter().map(|n| n.to_string()).collect();
        let line = format!(
            "{name}: {} line(s) {verb}{}{}",
            gone.len(),
            if gone.is_empty() { "" } else { ": " },
            list.join(" ")
        );
        stdout.line(line.as_bytes())?;
    }
    stdout.finish()?;
    if !quiet {
        let (cut, later) = match before {
            Some(b) => (
                format!(
                    " and every turn before {}",
                    crate::time::iso_time(Some(b)).as_str().unwrap_or_default()
                ),
                format!(
                    "; {} of them held turns from the cut on ({} turn(s){}), which the next export {} again without context from before the cut",
                    again.lines,
                    again.turns,
                    match again.untold {
                        0 => String::new(),
                        n => format!(
                            ", and those of {n} line(s) whose turn times the state did not keep"
                        ),
                    },
                    if dry_run { "would write" } else { "writes" }
                ),
            ),
            None => (String::new(), String::new()),
        };
        if dry_run {
            eprintln!(
                "hermes-harvest: dry run: forgetting {ids} session id(s){cut} would remove {total} line(s){later}; nothing was changed"
            );
        } else {
            eprintln!(
                "hermes-harvest: forgot {ids} session id(s){cut}; {total} line(s) removed{later}; the state keeps them out of every later run"
            );
        }
    }
    Ok(())
}

/// The committed lines of one output file, each with its session.
fn read_committed(
    name: &str,
    path: &Path,
    (committed, interrupted, need_meta): (&Committed, bool, bool),
    index: Option<&Vec<(String, u64)>>,
) -> Result<FileLines> {
    // The sessions of lines without meta, line by line.
    let indexed: Vec<&str> = index
        .into_iter()
        .flatten()
        .flat_map(|(s, n)| std::iter::repeat_n(s.as_str(), *n as usize))
        .collect();
    if committed.bytes == 0 && !path.exists() {
        // A split without a line has no file.
        return Ok(FileLines {
            name: name.to_string(),
            path: path.to_path_buf(),
            lines: Vec::new(),
            metas: Vec::new(),
        });
    }
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata()?.len();
    crate::state::check_committed(&mut file, path, len, committed)?;
    crate::output::check_no_tail(path, len, committed, interrupted)?;
    let mut bytes = Vec::new();
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0))?;
    file.take(committed.bytes).read_to_end(&mut bytes)?;
    let mut lines = Vec::new();
    let mut metas = Vec::new();
    for (n, line) in bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        let v: Value = serde_json::from_slice(line)
            .with_context(|| format!("{} line {}: not JSON", path.display(), n + 1))?;
        let session = v["meta"]["session"]
            .as_str()
            .or(indexed.get(n).copied())
            .or((!need_meta).then_some(""));
        let Some(session) = session else {
            return Err(refuse(format!(
                "{} line {} has no meta.session (exported with --no-meta or --target openai) and the state keeps no index of its session (it was written by an earlier version), so its session cannot be told; nothing was changed",
                path.display(),
                n + 1
            )));
        };
        let first = meta_time(&v["meta"], "first");
        lines.push((line.to_vec(), session.to_string(), first));
        metas.push(v["meta"].clone());
    }
    Ok(FileLines {
        name: name.to_string(),
        path: path.to_path_buf(),
        lines,
        metas,
    })
}

/// Writes and syncs `lines` to the staged file of `path` (see `state`);
/// returns what it holds.
fn stage(path: &Path, lines: &[&[u8]]) -> Result<Committed> {
    use std::os::unix::fs::OpenOptionsExt;
    let staged = crate::state::staged_path(path);
    let _ = std::fs::remove_file(&staged);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .mode(0o600)
        .open(&staged)
        .with_context(|| format!("creating {}", staged.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, file);
    for l in lines {
        out.write_all(l)?;
        out.write_all(b"\n")?;
    }
    let mut file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
        .with_context(|| format!("syncing {}", staged.display()))?;
    let bytes = file.metadata()?.len();
    let tail = crate::state::tail_hash(&mut file, bytes)?;
    crate::sink::sync_dir(&staged);
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
    m["dataset"] = serde_json::to_value(st.dataset.doc())?;
    if m["curation"].is_object() {
        m["curation"]["forgotten_sessions"] = st.curation.forgotten.len().into();
        m["curation"]["forgotten_before"] = crate::time::iso_time(st.curation.forgotten_before);
    }
    let mut tmp = temp_beside(&path)?;
    tmp.write_all(&serde_json::to_vec_pretty(&m)?)?;
    persist(tmp, &path)?;
    crate::card::write(dir, &m)?;
    Ok(())
}

/// Maps an output file's name to its path.
pub(crate) type PathOf<'a> = &'a dyn Fn(&str) -> PathBuf;

/// The superseded replies of one session found by an export: their texts
/// (as written, redacted), and the session's live turns at or below the
/// watermark (user text, key, time) that a retracted line also held.
#[derive(Debug, Default)]
pub struct Superseded {
    pub texts: BTreeSet<String>,
    pub turns: Vec<(String, i64, Option<f64>)>,
}

/// Retraction (after an export committed): removes, through the journal,
/// every line of a session in `found` that trains on one of its superseded
/// replies, and gives the line's other turns back to pending so that a
/// later run writes them again. Returns the lines removed.
pub(crate) fn retract(
    st: &mut RunState,
    state_path: &Path,
    (path_of, dir): (PathOf<'_>, Option<&Path>),
    found: &BTreeMap<String, Superseded>,
) -> Result<u64> {
    let files = read_files(st, state_path, path_of, false)?;
    let mut again: Vec<(String, String, i64, Option<f64>)> = Vec::new();
    let trains_on = |f: &FileLines, n: usize| -> Option<(&Superseded, Value)> {
        let sup = found.get(&f.lines[n].1)?;
        let v: Value = serde_json::from_slice(&f.lines[n].0).ok()?;
        let hit = v["messages"].as_array()?.iter().any(|m| {
            m["role"] == "assistant" && m["content"].as_str().is_some_and(|t| sup.texts.contains(t))
        });
        hit.then_some((sup, v))
    };
    let users = |v: &Value| -> Vec<String> {
        (v["messages"].as_array().into_iter().flatten())
            .filter(|m| m["role"] == "user")
            .filter_map(|m| m["content"].as_str().map(str::to_owned))
            .collect()
    };
    // Turns a kept line still holds are not written again.
    let mut kept: BTreeSet<(String, String)> = BTreeSet::new();
    for f in &files {
        for n in 0..f.lines.len() {
            let session = &f.lines[n].1;
            match trains_on(f, n) {
                Some((sup, v)) => again.extend(
                    (sup.turns.iter())
                        .filter(|t| users(&v).contains(&t.0))
                        .map(|t| (session.clone(), t.0.clone(), t.1, t.2)),
                ),
                None if found.contains_key(session) => {
                    let v: Value = serde_json::from_slice(&f.lines[n].0).unwrap_or_default();
                    kept.extend(users(&v).into_iter().map(|u| (session.clone(), u)));
                }
                None => {}
            }
        }
    }
    again.retain(|(s, u, _, _)| !kept.contains(&(s.clone(), u.clone())));
    let removed = stage_lines(&files, &|f, n| trains_on(f, n).is_some(), st)?;
    let n: u64 = removed.values().map(|g| g.len() as u64).sum();
    for (session, _, key, time) in again {
        let mut p = crate::state::Pending::default();
        p.add_turn(key, time, false);
        st.pending.entry(session).or_default().merge(p);
    }
    st.dataset.retracted_lines += n;
    st.save(state_path)?;
    crate::state::finish_journal(st, state_path, path_of)?;
    if let (Some(d), true) = (dir, n > 0) {
        update_manifest(d, st)?;
    }
    Ok(n)
}
