//! `validate DIR/`: a split directory checked file by file and across
//! files, through the binary, on exports of the captured fixtures; each
//! broken directory is a real export changed the way a leak, a bad edit or
//! a kill changes it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::common::{VERSIONS, bin, fixture_home, run, run_ok};

/// A fresh export directory of a fixture home (and the home, kept alive).
fn exported(version: &str, args: &[&str]) -> (tempfile::TempDir, tempfile::TempDir, PathBuf) {
    let home = fixture_home(version);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("out");
    let out = format!("{}/", dir.display());
    let mut full = vec!["export", "--out", out.as_str(), "--quiet"];
    full.extend_from_slice(args);
    run_ok(home.path(), &full);
    (home, work, dir)
}

/// Runs `validate DIR/ [args]`: (exit code, stdout lines, stderr).
fn validate(dir: &Path, args: &[&str]) -> (i32, Vec<String>, String) {
    let d = format!("{}/", dir.display());
    let mut full = vec!["validate", d.as_str()];
    full.extend_from_slice(args);
    let out = run(&full);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<String> = stdout.lines().map(str::to_owned).collect();
    for l in &lines {
        assert!(
            l.starts_with(dir.to_str().unwrap()) || l.contains(".json: "),
            "a problem line names its file first: {l}"
        );
    }
    (
        out.status.code().unwrap_or(-1),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts exit 4 and a problem line of `file` (with its line number, when
/// given) that contains `needle`.
fn assert_problem(dir: &Path, args: &[&str], file: &str, line: Option<usize>, needle: &str) {
    let (code, lines, err) = validate(dir, args);
    assert_eq!(code, 4, "expected problems: {lines:#?}\n{err}");
    let prefix = match line {
        Some(n) => format!("{}:{n}: ", dir.join(file).display()),
        None => format!("{}: ", dir.join(file).display()),
    };
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&prefix) && l.contains(needle)),
        "no `{prefix}…{needle}…` among:\n{}",
        lines.join("\n")
    );
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn append(path: &Path, line: &Value) {
    let mut text = std::fs::read_to_string(path).unwrap();
    text.push_str(&serde_json::to_string(line).unwrap());
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

#[test]
fn every_fixture_export_passes_in_every_format() {
    for version in VERSIONS {
        for args in [
            &["--format", "sft"][..],
            &["--format", "dpo"],
            &["--format", "dpo", "--dpo-style", "flat"],
            &["--target", "openai"],
        ] {
            let (_home, _work, dir) = exported(version, args);
            let (code, lines, err) = validate(&dir, &[]);
            assert_eq!(code, 0, "{version} {args:?}: {lines:#?}\n{err}");
            assert!(lines.is_empty());
            assert!(err.contains("0 problem(s)"), "{err}");
        }
    }
}

#[test]
fn a_cumulative_directory_agrees_with_its_state() {
    let home = fixture_home(VERSIONS[0]);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("out");
    let state = work.path().join("state.json");
    let (out, st) = (format!("{}/", dir.display()), state.display().to_string());
    run_ok(
        home.path(),
        &["export", "--out", &out, "--state", &st, "-q"],
    );
    let (code, lines, err) = validate(&dir, &["--state", &st]);
    assert_eq!(code, 0, "{lines:#?}\n{err}");
    // A single file has no state to agree with.
    let train = dir.join("train.jsonl");
    let out = run(&["validate", train.to_str().unwrap(), "--state", &st]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Another directory is not this state's.
    let (_h, _w, other) = exported(VERSIONS[0], &[]);
    let (code, lines, _) = validate(&other, &["--state", &st]);
    assert_eq!(code, 4);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&st) && l.contains("not to this directory")),
        "{lines:#?}"
    );
}

#[test]
fn a_unit_in_both_splits_is_a_leak() {
    let (_home, _work, dir) = exported(VERSIONS[0], &[]);
    let valid = read_lines(&dir.join("valid.jsonl"));
    let mut moved = valid[0].clone();
    // Another exchange of the same session: only the unit is shared.
    for m in moved["messages"].as_array_mut().unwrap() {
        if let Some(Value::String(s)) = m.get_mut("content") {
            s.push_str(" (a later turn)");
        }
    }
    let session = moved["meta"]["unit"].as_str().unwrap().to_string();
    append(&dir.join("train.jsonl"), &moved);
    let n = read_lines(&dir.join("train.jsonl")).len();
    // Train is read first: valid's line names train's.
    assert_problem(
        &dir,
        &[],
        "valid.jsonl",
        Some(1),
        &format!(
            "split unit {session:?} is also in train.jsonl:{n}: a conversation in both splits"
        ),
    );
    // `meta.unit` wins over the session when a line has one.
    let mut text = String::new();
    for mut l in read_lines(&dir.join("train.jsonl")) {
        let unit = format!("{}@own", l["meta"]["session"].as_str().unwrap());
        l["meta"]["unit"] = Value::String(unit);
        text.push_str(&serde_json::to_string(&l).unwrap());
        text.push('\n');
    }
    std::fs::write(dir.join("train.jsonl"), text).unwrap();
    let (_, lines, _) = validate(&dir, &[]);
    assert!(
        !lines.iter().any(|l| l.contains("split unit")),
        "{lines:#?}"
    );
}

#[test]
fn an_answer_in_both_splits_is_a_leak_even_as_another_session() {
    let (_home, _work, dir) = exported(VERSIONS[0], &[]);
    let valid = read_lines(&dir.join("valid.jsonl"));
    let mut copy = valid[0].clone();
    copy["meta"]["session"] = Value::String("another-session".into());
    // Another system prompt and other figures: the same answer, normalised.
    let msgs = copy["messages"].as_array_mut().unwrap();
    if msgs[0]["role"] == "system" {
        msgs[0]["content"] = Value::String("Another system prompt.".into());
    } else {
        msgs.insert(
            0,
            serde_json::json!({"role": "system", "content": "Another."}),
        );
    }
    append(&dir.join("train.jsonl"), &copy);
    let n = read_lines(&dir.join("train.jsonl")).len();
    assert_problem(
        &dir,
        &[],
        "valid.jsonl",
        Some(1),
        &format!("the same answer (a user turn and its reply, normalised) is in train.jsonl:{n}"),
    );
    let (_, lines, _) = validate(&dir, &[]);
    assert!(
        !lines.iter().any(|l| l.contains("a line twice")),
        "{lines:#?}"
    );
}

#[test]
fn a_line_twice_is_found_whatever_its_meta() {
    let (_home, _work, dir) = exported(VERSIONS[1], &["--format", "dpo"]);
    let train = read_lines(&dir.join("train.jsonl"));
    let mut again = train[0].clone();
    again["meta"]["part"] = Value::from(9);
    append(&dir.join("train.jsonl"), &again);
    assert_problem(
        &dir,
        &[],
        "train.jsonl",
        Some(train.len() + 1),
        "the same line as line 1 (meta aside): a line twice",
    );
}

#[test]
fn a_manifest_that_disagrees_with_its_files() {
    let (_home, _work, dir) = exported(VERSIONS[0], &[]);
    let path = dir.join("manifest.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let lines = m["split"]["files"]["train.jsonl"]["lines"]
        .as_u64()
        .unwrap();
    m["split"]["files"]["train.jsonl"]["lines"] = Value::from(lines + 1);
    let (channel, n) = m["counts"]["channels"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, n)| n.as_u64() > Some(0))
        .map(|(c, n)| (c.clone(), n.as_u64().unwrap()))
        .unwrap();
    m["counts"]["channels"][&channel] = Value::from(n + 2);
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    assert_problem(
        &dir,
        &[],
        "manifest.json",
        None,
        &format!("split.files: train.jsonl holds {lines} lines"),
    );
    assert_problem(
        &dir,
        &[],
        "manifest.json",
        None,
        &format!(
            "counts.channels: {channel}: says {}, the files hold {n} lines",
            n + 2
        ),
    );
    m["format"] = Value::from("dpo");
    m["bogus"] = Value::from(1);
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    assert_problem(
        &dir,
        &[],
        "manifest.json",
        None,
        "format is dpo, but the files hold sft lines",
    );
    assert_problem(&dir, &[], "manifest.json", None, "schema: ");
}

#[test]
fn a_card_that_disagrees_with_the_manifest() {
    let (_home, _work, dir) = exported(VERSIONS[0], &[]);
    let path = dir.join("README.md");
    let card = std::fs::read_to_string(&path).unwrap();
    let m: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let f = &m["split"]["files"]["valid.jsonl"];
    let row = format!("| valid.jsonl | {} | {} |", f["lines"], f["bytes"]);
    let at = card
        .lines()
        .position(|l| l == row)
        .expect("the card's file row")
        + 1;
    std::fs::write(&path, card.replace(&row, "| valid.jsonl | 999 | 1 |")).unwrap();
    assert_problem(
        &dir,
        &[],
        "README.md",
        Some(at),
        &format!("differs from the card the manifest gives (expected {row:?})"),
    );
    // A card someone else wrote is no card.
    std::fs::write(&path, "# My notes\n").unwrap();
    assert_problem(&dir, &[], "README.md", None, "no dataset card");
}

#[test]
fn a_half_written_line_and_a_leftover_temporary_file_are_half_done() {
    let (_home, _work, dir) = exported(VERSIONS[1], &[]);
    let path = dir.join("valid.jsonl");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.iter().filter(|b| **b == b'\n').count();
    bytes.extend_from_slice(br#"{"messages": [{"role": "user", "content": "cut he"#);
    std::fs::write(&path, bytes).unwrap();
    assert_problem(
        &dir,
        &[],
        "valid.jsonl",
        Some(n + 1),
        "the last line has no newline: a run was killed while writing it",
    );
    std::fs::write(dir.join(".hermes-harvest-partial-train.jsonl.x1"), b"{").unwrap();
    assert_problem(
        &dir,
        &[],
        ".hermes-harvest-partial-train.jsonl.x1",
        None,
        "left by a run that did not finish",
    );
}

/// Kills a first `--state` export at a stall point; returns its directory
/// and state file.
fn killed_first_night(point: &str) -> (tempfile::TempDir, tempfile::TempDir, PathBuf, PathBuf) {
    let home = fixture_home(VERSIONS[0]);
    let work = tempfile::tempdir().unwrap();
    let (dir, state) = (work.path().join("out"), work.path().join("state.json"));
    let mut child = Command::new(bin())
        .args(["export", "--quiet", "--hermes-home"])
        .arg(home.path())
        .arg("--out")
        .arg(format!("{}/", dir.display()))
        .arg("--state")
        .arg(&state)
        .env("HERMES_HARVEST_STALL_AT", point)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains(&format!("stalled at {point}")), "{line}");
    child.kill().unwrap();
    child.wait().unwrap();
    (home, work, dir, state)
}

#[test]
fn a_directory_a_kill_left_half_done_fails() {
    let (_home, _work, dir, _state) = killed_first_night("outputs-committed");
    assert_problem(&dir, &[], "manifest.json", None, "missing");
    let (_home, _work, dir, state) = killed_first_night("before-state");
    let st = state.display().to_string();
    let (code, lines, err) = validate(&dir, &["--state", &st]);
    assert_eq!(code, 4, "{lines:#?}\n{err}");
    assert!(
        lines
            .iter()
            // The first night's state claims its files before a byte is
            // written, so the kill shows as bytes past the commit.
            .any(|l| l.contains("past the 0 the state committed: a run was killed")),
        "{lines:#?}"
    );
}

#[test]
fn bytes_past_the_state_commit_are_half_done() {
    let home = fixture_home(VERSIONS[1]);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("out");
    let state = work.path().join("state.json");
    let (out, st) = (format!("{}/", dir.display()), state.display().to_string());
    run_ok(
        home.path(),
        &["export", "--out", &out, "--state", &st, "-q"],
    );
    let train = dir.join("train.jsonl");
    let before = std::fs::read(&train).unwrap();
    let mut after = before.clone();
    after.extend_from_slice(b"{}\n");
    std::fs::write(&train, &after).unwrap();
    assert_problem(
        &dir,
        &["--state", &st],
        "train.jsonl",
        None,
        &format!("3 bytes past the {} the state committed", before.len()),
    );
    // A committed line changed in place (same length).
    let mut edited = before.clone();
    let last = edited.len() - 3;
    edited[last] = if edited[last] == b'a' { b'b' } else { b'a' };
    std::fs::write(&train, &edited).unwrap();
    assert_problem(
        &dir,
        &["--state", &st],
        "train.jsonl",
        None,
        "its committed lines differ",
    );
}

#[test]
fn one_argument_flavour_for_the_whole_directory() {
    // The 0.13 capture has tool calls in both splits.
    let (_home, _work, dir) = exported(VERSIONS[1], &[]);
    let path = dir.join("valid.jsonl");
    let mut text = String::new();
    let mut first = None;
    for (i, mut line) in read_lines(&path).into_iter().enumerate() {
        for m in line["messages"].as_array_mut().unwrap() {
            for c in m
                .get_mut("tool_calls")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                let args = c["function"]["arguments"].to_string();
                c["function"]["arguments"] = Value::String(args);
                first = first.or(Some(i + 1));
            }
        }
        text.push_str(&serde_json::to_string(&line).unwrap());
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    assert_problem(
        &dir,
        &[],
        "valid.jsonl",
        first,
        "tool-call arguments are strings here but objects in train.jsonl (one flavour per directory)",
    );
}

/// A cumulative export of the first fixture: (home, work, dir, state).
fn cumulative() -> (tempfile::TempDir, tempfile::TempDir, PathBuf, String) {
    let home = fixture_home(VERSIONS[0]);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("out");
    let state = work.path().join("state.json").display().to_string();
    let out = format!("{}/", dir.display());
    run_ok(
        home.path(),
        &["export", "--out", &out, "--state", &state, "-q"],
    );
    (home, work, dir, state)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn write_json(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

#[test]
fn the_cumulative_figures_must_equal_the_files() {
    let (_home, _work, dir, state) = cumulative();
    let path = dir.join("manifest.json");
    let good = read_json(&path);
    let d = &good["dataset"];
    assert!(
        d["tokens"].as_object().is_some_and(|t| !t.is_empty()),
        "{d}"
    );
    let mut m = good.clone();
    let (channel, n) = d["samples"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(c, n)| (c.clone(), n.as_u64().unwrap()))
        .next()
        .unwrap();
    m["dataset"]["samples"][&channel] = Value::from(n + 1);
    let train = d["lines"]["train.jsonl"].as_u64().unwrap();
    m["dataset"]["lines"]["train.jsonl"] = Value::from(train + 3);
    m["dataset"]["time_range"]["first"] = Value::from("2001-01-01T00:00:00Z");
    write_json(&path, &m);
    for needle in [
        format!(
            "dataset.samples: {channel}: says {}, the files hold {n} lines",
            n + 1
        ),
        format!(
            "dataset.lines: train.jsonl: says {}, the files hold {train} lines",
            train + 3
        ),
        "dataset.time_range: first: says \"2001-01-01T00:00:00Z\"".to_string(),
    ] {
        assert_problem(&dir, &[], "manifest.json", None, &needle);
    }
    // Token sums the files cannot recount: the state's figures of each
    // line must give them, and the manifest must hold the state's sums.
    let mut m = good.clone();
    let total = d["tokens"][&channel]["total"].as_u64().unwrap();
    m["dataset"]["tokens"][&channel]["total"] = Value::from(total + 5);
    write_json(&path, &m);
    let (code, lines, err) = validate(&dir, &["--state", &state]);
    assert_eq!(code, 4, "{lines:#?}\n{err}");
    assert!(
        lines.iter().any(|l| l.starts_with(&state)
            && l.contains("its dataset figures differ from the manifest's")),
        "{lines:#?}"
    );
    // A state whose sums its own line figures do not give.
    write_json(&path, &m);
    let mut st = read_json(Path::new(&state));
    st["dataset"]["tokens"][&channel]["total"] = Value::from(total + 5);
    write_json(Path::new(&state), &st);
    let (code, lines, _) = validate(&dir, &["--state", &state]);
    assert_eq!(code, 4);
    assert!(
        lines.iter().any(|l| l.starts_with(&state)
            && l.contains("the figures it keeps of each line add up to tokens")),
        "{lines:#?}"
    );
}

/// Forgets `ids` from the cumulative `dir` kept with `state`, checks that
/// `validate DIR/ --state` still passes, and gives the manifest's `dataset`.
fn forget_then_validate(dir: &Path, state: &str, ids: &[&str]) -> Value {
    let out = format!("{}/", dir.display());
    let forget = ["forget", "--out", &out, "--state", state, "-q"];
    let forgot = run(&[&forget[..], ids].concat());
    assert!(
        forgot.status.success(),
        "{}",
        String::from_utf8_lossy(&forgot.stderr)
    );
    let (code, lines, err) = validate(dir, &["--state", state]);
    assert_eq!(code, 0, "{lines:#?}\n{err}");
    read_json(&dir.join("manifest.json"))["dataset"].clone()
}

#[test]
fn forget_takes_its_lines_out_of_the_cumulative_figures() {
    let (_home, _work, dir, state) = cumulative();
    let before = read_json(&dir.join("manifest.json"))["dataset"].clone();
    let first = read_lines(&dir.join("train.jsonl"))[0]["meta"].clone();
    let (session, channel) = (
        first["session"].as_str().unwrap(),
        first["channel"].as_str().unwrap(),
    );
    let after = forget_then_validate(&dir, &state, &[session]);
    let gone = after["forgotten_lines"].as_u64().unwrap();
    assert!(gone > 0, "{after}");
    let samples = |d: &Value| d["tokens"][channel]["samples"].as_u64().unwrap_or(0);
    assert_eq!(
        samples(&after) + gone,
        samples(&before),
        "{before}\n{after}"
    );
    let total = |d: &Value| d["tokens"][channel]["total"].as_u64().unwrap_or(0);
    assert!(total(&after) < total(&before), "{before}\n{after}");
}

#[test]
fn an_exchange_never_written_holds_no_split() {
    let home = fixture_home(VERSIONS[0]);
    let db = rusqlite::Connection::open(home.path().join("state.db")).unwrap();
    crate::common::drop_fts_triggers(&db);
    db.execute_batch("DELETE FROM messages; DELETE FROM sessions;")
        .unwrap();
    drop(db);
    std::fs::remove_file(home.path().join("response_store.db")).unwrap();
    std::fs::remove_dir_all(home.path().join("sessions")).unwrap();
    // Session a's exchange is over the budget (never written); session
    // b's is the same once figures are masked, and fits.
    let t = 1_800_000_000.0;
    let mut batch = String::new();
    for (k, (id, figure)) in [("s-a", "7".repeat(20_000)), ("s-b", "7".to_string())]
        .iter()
        .enumerate()
    {
        let at = t + 100.0 * k as f64;
        batch.push_str(&format!(
            "INSERT INTO sessions (id, source, started_at) VALUES ('{id}', 'cli', {at});
             INSERT INTO messages (session_id, role, content, timestamp, active, compacted) VALUES ('{id}', 'user', 'count to {figure}', {at}, 1, 0);
             INSERT INTO messages (session_id, role, content, timestamp, finish_reason, active, compacted) VALUES ('{id}', 'assistant', 'counted', {}, 'stop', 1, 0);",
            at + 1.0
        ));
    }
    crate::cron::sql(home.path(), &batch);
    let work = tempfile::tempdir().unwrap();
    let out = format!("{}/", work.path().join("out").display());
    let args = [
        "export",
        "--out",
        &out,
        "--valid-fraction",
        "0.5",
        "--channel",
        "tui",
    ];
    let done = crate::common::run_in(home.path(), &args);
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(err.contains("over_budget"), "{err}");
    assert!(!err.contains("cross_split_copy"), "{err}");
    let all: Vec<Value> = ["train.jsonl", "valid.jsonl"]
        .iter()
        .filter_map(|f| std::fs::read(work.path().join("out").join(f)).ok())
        .flat_map(|b| crate::common::lines(&b))
        .collect();
    assert_eq!(all.len(), 1, "{err}");
    assert_eq!(all[0]["meta"]["session"], "s-b");
}

#[test]
fn an_upgraded_state_counts_its_dataset_from_meta() {
    let (home, _work, dir, state) = cumulative();
    // What version 3 wrote: no units, no dataset sums, no line figures.
    let before = read_json(&dir.join("manifest.json"))["dataset"].clone();
    let mut st = read_json(Path::new(&state));
    st["version"] = 3.into();
    for k in ["units", "dataset", "figures"] {
        st.as_object_mut().unwrap().remove(k);
    }
    st["identity"]["split"] = "fnv1a-fmix64".into();
    write_json(Path::new(&state), &st);
    let db = rusqlite::Connection::open(home.path().join("state.db")).unwrap();
    crate::common::drop_fts_triggers(&db);
    drop(db);
    let t = 1_900_000_000.0;
    crate::cron::sql(
        home.path(),
        &format!(
            "INSERT INTO sessions (id, source, started_at) VALUES ('after-upgrade', 'cli', {t});
             INSERT INTO messages (session_id, role, content, timestamp, active, compacted) VALUES ('after-upgrade', 'user', 'a question after the upgrade', {t}, 1, 0);
             INSERT INTO messages (session_id, role, content, timestamp, finish_reason, active, compacted) VALUES ('after-upgrade', 'assistant', 'an answer after the upgrade', {}, 'stop', 1, 0);",
            t + 1.0
        ),
    );
    let out = format!("{}/", dir.display());
    run_ok(
        home.path(),
        &["export", "--out", &out, "--state", &state, "-q"],
    );
    let (code, lines, err) = validate(&dir, &["--state", &state]);
    assert_eq!(code, 0, "{lines:#?}\n{err}");
    let d = read_json(&dir.join("manifest.json"))["dataset"].clone();
    let sum = |v: &Value| -> u64 {
        v.as_object()
            .unwrap()
            .values()
            .map(|x| x.as_u64().unwrap_or_else(|| x["samples"].as_u64().unwrap()))
            .sum()
    };
    assert_eq!(sum(&d["samples"]), sum(&before["samples"]) + 1, "{d}");
    assert_eq!(d["time_range"]["first"], before["time_range"]["first"]);
    // The tokens of the lines written before the upgrade are not known.
    assert_eq!(sum(&d["tokens"]), 1, "{d}");
    // Forgetting a line of each kind takes each out of what it is in.
    let old = read_lines(&dir.join("train.jsonl"))[0]["meta"]["session"]
        .as_str()
        .unwrap()
        .to_string();
    let after = forget_then_validate(&dir, &state, &["after-upgrade", &old]);
    let gone = after["forgotten_lines"].as_u64().unwrap();
    assert!(gone >= 2, "{after}");
    assert_eq!(sum(&after["samples"]) + gone, sum(&d["samples"]), "{after}");
    assert_eq!(sum(&after["tokens"]), 0, "{after}");
}
