//! Upgrades keep the promise: turns an earlier version
//! left covered below the watermark are exported by the next night, once.
//! `HERMES_HARVEST_RULES=0` makes a run follow the rules of an earlier
//! version (tool-using exchanges dropped at default flags) and record them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::common::*;
use crate::cron::{dir_lines, read};

/// `export --out WORK/out/ --state WORK/state.json --near-duplicate-cap 0`
/// plus `extra`, under the export rules `rules` (`None`: this version's).
fn night_cmd(home: &Path, work: &Path, rules: Option<&str>, extra: &[&str]) -> Command {
    let dir = format!("{}/", work.join("out").display());
    let state = work.join("state.json");
    let mut cmd = Command::new(bin());
    cmd.args(["export", "--out", &dir, "--state"])
        .arg(&state)
        .args(["--near-duplicate-cap", "0"])
        .args(extra)
        .arg("--hermes-home")
        .arg(home)
        .env_remove("HERMES_HOME")
        .env_remove("HERMES_HARVEST_RULES");
    if let Some(r) = rules {
        cmd.env("HERMES_HARVEST_RULES", r);
    }
    cmd
}

fn night(home: &Path, work: &Path, rules: Option<&str>, extra: &[&str]) -> Output {
    let out = night_cmd(home, work, rules, extra).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The cumulative files train on what a fresh export (context and cap
/// off) does.
fn same_targets_as_a_fresh_export(home: &Path, work: &Path) {
    let (_, fresh, _) = export(home, &["--sft-context", "0", "--near-duplicate-cap", "0"]);
    assert_eq!(targets(&dir_lines(&work.join("out"))), targets(&fresh));
}

fn state_of(work: &Path) -> Value {
    serde_json::from_slice(&read(&work.join("state.json"))).unwrap()
}

fn manifest_of(work: &Path) -> Value {
    serde_json::from_slice(&read(&work.join("out/manifest.json"))).unwrap()
}

/// Each unit's file (`train.jsonl` or `valid.jsonl`), from the lines' meta.
fn splits(dir: &Path) -> BTreeMap<String, &'static str> {
    let mut out = BTreeMap::new();
    for f in ["train.jsonl", "valid.jsonl"] {
        for l in lines(&read(&dir.join(f))) {
            let unit = l["meta"]["unit"].as_str().unwrap().to_string();
            let was = out.insert(unit.clone(), f);
            assert!(
                was.is_none_or(|w| w == f),
                "unit {unit} lies in both splits"
            );
        }
    }
    out
}

fn validate(work: &Path) {
    let out = format!("{}/", work.join("out").display());
    validates_with_state(&out, &work.join("state.json"));
}

/// The sides of each DPO pair, sorted.
fn pairs(lines: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = lines
        .iter()
        .map(|l| format!("{}|{}", l["chosen"], l["rejected"]))
        .collect();
    out.sort();
    out
}

/// Night 2 re-checked once: it said so, counted it in the manifest and
/// recorded this version's rules. Returns (lines, turns) it added.
fn rechecked(work: &Path, out: &Output, from: u64) -> (u64, u64) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("export rules {from} -> 1")),
        "{stderr}"
    );
    let r = &manifest_of(work)["counts"]["rechecked"];
    assert_eq!(r["rules_before"], from, "{r}");
    assert_eq!(r["rules"], 1, "{r}");
    assert_eq!(state_of(work)["rules"], 1);
    (r["lines"].as_u64().unwrap(), r["turns"].as_u64().unwrap())
}

/// A third night re-checks nothing and writes nothing; returns the
/// sessions it read.
fn third_night_is_quiet(home: &Path, work: &Path, extra: &[&str]) -> usize {
    let before = dir_lines(&work.join("out"));
    let out = night(home, work, None, extra);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("re-checked"), "{stderr}");
    assert!(stderr.contains("nothing new"), "{stderr}");
    assert_eq!(state_of(work)["rules"], 1);
    assert_eq!(dir_lines(&work.join("out")), before);
    sessions_read(&stderr)
}

/// The sessions a "nothing new" night says it read.
fn sessions_read(stderr: &str) -> usize {
    let at = stderr.find("(read ").expect("a nothing-new line") + "(read ".len();
    stderr[at..].split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn an_upgrade_exports_once_the_turns_the_old_rules_left_covered() {
    for version in VERSIONS {
        let home = fixture_home(version);
        let work = tempfile::tempdir().unwrap();
        let flags = ["--sft-context", "0"];
        night(home.path(), work.path(), Some("0"), &flags);
        assert_eq!(state_of(work.path())["rules"], 0, "{version}");
        let old = dir_lines(&work.path().join("out"));
        let old_files = [
            read(&work.path().join("out/train.jsonl")),
            read(&work.path().join("out/valid.jsonl")),
        ];
        let old_splits = splits(&work.path().join("out"));
        let (code, fresh, _) = export(
            home.path(),
            &["--sft-context", "0", "--near-duplicate-cap", "0"],
        );
        assert_eq!(code, 0);
        let missing = targets(&fresh).len() - targets(&old).len();
        assert!(missing > 0, "{version}: the old rules dropped nothing");

        let out = night(home.path(), work.path(), None, &flags);
        let (added, turns) = rechecked(work.path(), &out, 0);
        assert!(added > 0 && turns > 0, "{version}");
        let now = dir_lines(&work.path().join("out"));
        assert_eq!(
            targets(&now),
            targets(&fresh),
            "{version}: the cumulative files against a fresh export"
        );
        assert_eq!(now.len() as u64, old.len() as u64 + added, "{version}");
        // Only appended, and no unit moved.
        assert!(read(&work.path().join("out/train.jsonl")).starts_with(&old_files[0]));
        assert!(read(&work.path().join("out/valid.jsonl")).starts_with(&old_files[1]));
        let new_splits = splits(&work.path().join("out"));
        for (unit, file) in &old_splits {
            assert_eq!(new_splits.get(unit), Some(file), "{version}: {unit} moved");
        }
        validate(work.path());
        let read = third_night_is_quiet(home.path(), work.path(), &flags);
        validate(work.path());
        // After the re-check, a night reads what it reads without one.
        let control = tempfile::tempdir().unwrap();
        night(home.path(), control.path(), None, &flags);
        let out = night(home.path(), control.path(), None, &flags);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("re-checked"), "{stderr}");
        assert_eq!(read, sessions_read(&stderr), "{version}");
    }
}

#[test]
fn a_state_without_rules_is_rechecked_once_and_nothing_is_doubled() {
    // An earlier version's state has no `rules`. Its files hold every turn
    // (written at today's defaults, context included): the re-check reads
    // them, finds every turn held, and writes nothing.
    for version in VERSIONS {
        let home = fixture_home(version);
        let work = tempfile::tempdir().unwrap();
        night(home.path(), work.path(), None, &[]);
        let path = work.path().join("state.json");
        let mut st = state_of(work.path());
        assert_eq!(st["rules"], 1);
        st.as_object_mut().unwrap().remove("rules");
        std::fs::write(&path, st.to_string()).unwrap();
        let before = dir_lines(&work.path().join("out"));
        let out = night(home.path(), work.path(), None, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Nothing written: the outputs (the manifest with them) stay as they were.
        assert!(
            stderr.contains(
                "(export rules 0 -> 1): 0 lines written that the files did not hold (0 turns)"
            ),
            "{version}: {stderr}"
        );
        assert!(stderr.contains("nothing new"), "{version}: {stderr}");
        assert_eq!(state_of(work.path())["rules"], 1);
        assert_eq!(dir_lines(&work.path().join("out")), before, "{version}");
        validate(work.path());
        third_night_is_quiet(home.path(), work.path(), &[]);
    }
}

#[test]
fn a_state_without_rules_gets_the_dropped_turns_once() {
    // The old rules' state, its `rules` field removed as an earlier
    // version wrote it.
    let home = fixture_home(VERSIONS[0]);
    let work = tempfile::tempdir().unwrap();
    let flags = ["--sft-context", "0"];
    night(home.path(), work.path(), Some("0"), &flags);
    let path = work.path().join("state.json");
    let mut st = state_of(work.path());
    st.as_object_mut().unwrap().remove("rules");
    std::fs::write(&path, st.to_string()).unwrap();
    let out = night(home.path(), work.path(), None, &flags);
    let (added, _) = rechecked(work.path(), &out, 0);
    assert!(added > 0);
    same_targets_as_a_fresh_export(home.path(), work.path());
    third_night_is_quiet(home.path(), work.path(), &flags);
}

#[test]
fn a_killed_recheck_is_done_by_the_next_run() {
    let home = fixture_home(VERSIONS[0]);
    let work = tempfile::tempdir().unwrap();
    let flags = ["--sft-context", "0"];
    night(home.path(), work.path(), Some("0"), &flags);
    let before = read(&work.path().join("state.json"));
    let mut cmd = night_cmd(home.path(), work.path(), None, &flags);
    cmd.env("HERMES_HARVEST_STALL_AT", "before-state");
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    while !line.contains("stalled at") {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut err, &mut line).unwrap() > 0);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(read(&work.path().join("state.json")), before);
    let out = night(home.path(), work.path(), None, &flags);
    let (added, _) = rechecked(work.path(), &out, 0);
    assert!(added > 0);
    same_targets_as_a_fresh_export(home.path(), work.path());
    validate(work.path());
    third_night_is_quiet(home.path(), work.path(), &flags);
}

#[test]
fn a_dpo_upgrade_adds_the_dropped_pairs_once() {
    let home = fixture_home(VERSIONS[0]);
    let work = tempfile::tempdir().unwrap();
    let flags = ["--format", "dpo"];
    night(home.path(), work.path(), Some("0"), &flags);
    let old = dir_lines(&work.path().join("out"));
    let (_, fresh, _) = export(
        home.path(),
        &["--format", "dpo", "--near-duplicate-cap", "0"],
    );
    assert!(pairs(&old).len() < pairs(&fresh).len(), "nothing dropped");
    let out = night(home.path(), work.path(), None, &flags);
    let (added, turns) = rechecked(work.path(), &out, 0);
    assert_eq!(added, (pairs(&fresh).len() - pairs(&old).len()) as u64);
    assert_eq!(turns, added);
    let now = dir_lines(&work.path().join("out"));
    assert_eq!(pairs(&now), pairs(&fresh));
    let sessions: BTreeSet<&str> = now
        .iter()
        .filter_map(|l| l["meta"]["session"].as_str())
        .collect();
    assert!(!sessions.is_empty());
    validate(work.path());
    third_night_is_quiet(home.path(), work.path(), &flags);
}

#[test]
fn a_recheck_writes_the_same_with_one_thread_or_four() {
    // The workers format ahead for the re-check's selection too: what they
    // format is what the sink writes, so the bytes do not depend on -j.
    let home = fixture_home(VERSIONS[0]);
    let mut files = Vec::new();
    for threads in ["1", "4"] {
        let work = tempfile::tempdir().unwrap();
        night(home.path(), work.path(), Some("0"), &["-j", "1"]);
        night(home.path(), work.path(), None, &["-j", threads]);
        files.push([
            read(&work.path().join("out/train.jsonl")),
            read(&work.path().join("out/valid.jsonl")),
        ]);
    }
    assert_eq!(files[0], files[1]);
}

#[test]
fn lines_without_meta_are_told_by_the_state_index() {
    // `--no-meta` lines carry neither session nor times: the state's
    // index tells their sessions, and their answers are held at any time.
    let home = fixture_home(VERSIONS[0]);
    let work = tempfile::tempdir().unwrap();
    let flags = ["--sft-context", "0", "--no-meta"];
    night(home.path(), work.path(), Some("0"), &flags);
    let out = night(home.path(), work.path(), None, &flags);
    let (added, _) = rechecked(work.path(), &out, 0);
    assert!(added > 0);
    let (_, fresh, _) = export(
        home.path(),
        &[
            "--sft-context",
            "0",
            "--near-duplicate-cap",
            "0",
            "--no-meta",
        ],
    );
    assert_eq!(
        targets(&dir_lines(&work.path().join("out"))),
        targets(&fresh)
    );
    validate(work.path());
    third_night_is_quiet(home.path(), work.path(), &flags);
}
