//! Issue 11: nothing lost, nothing doubled, nothing clobbered, nothing
//! leaked. Each test is a reproduction of a reported case, driving the real
//! binary; every line it produces is validated against `schemas/`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;
use crate::cron::{append_turn, files_of, grow, read, sql, user_texts_in};

/// A scratch copy of the 0.19 capture without FTS triggers (quick to grow).
fn scratch_home() -> tempfile::TempDir {
    let home = fixture_home(VERSIONS[0]);
    let db = rusqlite::Connection::open(home.path().join("state.db")).unwrap();
    drop_fts_triggers(&db);
    home
}

fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every user text of a full one-shot export with `args`, sorted.
fn one_shot(home: &Path, args: &[&str]) -> Vec<String> {
    let (c, lines, err) = export(home, args);
    assert_eq!(c, 0, "{err}");
    let mut v = user_texts(&lines);
    v.sort();
    v
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The cron job: `export --out DIR/ --state STATE` plus `args`.
struct Cron {
    dir: PathBuf,
    state: PathBuf,
    _work: tempfile::TempDir,
}

impl Cron {
    fn new() -> Cron {
        let work = tempfile::tempdir().unwrap();
        Cron {
            dir: work.path().join("out"),
            state: work.path().join("state.json"),
            _work: work,
        }
    }

    /// SFT context is off: these tests count each turn as a training
    /// target, which must be delivered exactly once.
    fn run(&self, home: &Path, args: &[&str]) -> std::process::Output {
        let dir = format!("{}/", self.dir.display());
        let mut full = vec![
            "export",
            "--sft-context",
            "0",
            "--out",
            &dir,
            "--state",
            self.state.to_str().unwrap(),
        ];
        full.extend_from_slice(args);
        run_in(home, &full)
    }

    fn ok(&self, home: &Path, args: &[&str]) {
        let out = self.run(home, args);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
    }

    fn texts(&self) -> Vec<String> {
        sorted(user_texts_in(&self.dir))
    }
}

/// Runs `cmd`, reads the first line of its stdout and closes the pipe (a
/// reader like `| head -1`); returns that line and how the run ended.
fn first_line_then_close(mut cmd: Command) -> (String, std::process::Output) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    (first, child.wait_with_output().unwrap())
}

/// Runs `cmd`, failing the test (instead of hanging it) after a minute.
fn bounded(mut cmd: Command) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t1 = std::thread::spawn(move || {
        let mut b = Vec::new();
        out.read_to_end(&mut b).unwrap();
        b
    });
    let t2 = std::thread::spawn(move || {
        let mut b = Vec::new();
        err.read_to_end(&mut b).unwrap();
        b
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("the run hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: t1.join().unwrap(),
        stderr: t2.join().unwrap(),
    }
}

fn export_cmd(home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.arg("export")
        .args(args)
        .arg("--hermes-home")
        .arg(home)
        .env_remove("HERMES_HOME");
    c
}

// ---------------------------------------------------------------------------
// Data loss in incremental runs

#[test]
fn a_reader_that_stops_early_does_not_advance_the_state() {
    let home = scratch_home();
    grow(home.path(), 20, "a"); // far more than a pipe buffer
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state.json");
    // `| head -1`: the reader goes away after one line.
    let (first, out) = first_line_then_close(export_cmd(
        home.path(),
        &["--state", state.to_str().unwrap()],
    ));
    assert!(!first.is_empty());
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("not advanced"), "{}", stderr(&out));
    assert!(!state.exists(), "the state advanced past undelivered lines");
    // The next run delivers everything.
    let out = run_in(home.path(), &["export", "--state", state.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        sorted(user_texts(&lines(&out.stdout))),
        one_shot(home.path(), &[])
    );
}

#[test]
fn export_into_head_reports_the_lines_actually_delivered() {
    let home = scratch_home();
    grow(home.path(), 20, "a"); // far more than a pipe buffer
    let (first, out) = first_line_then_close(export_cmd(home.path(), &[]));
    assert!(!first.is_empty());
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    let said = err
        .split("the reader closed the output after ")
        .nth(1)
        .unwrap_or_else(|| panic!("{err}"));
    let mut words = said.split_whitespace();
    let delivered: u64 = words.next().unwrap().parse().unwrap();
    let total: u64 = words.nth(2).unwrap().parse().unwrap();
    assert!(
        delivered >= 1 && delivered < total,
        "{delivered} of {total}: {err}"
    );
}

#[test]
fn min_turns_never_consumes_the_turns_it_skipped() {
    let home = scratch_home();
    let cron = Cron::new();
    cron.ok(
        home.path(),
        &["--min-turns", "2", "--near-duplicate-cap", "0"],
    );
    let db = rusqlite::Connection::open(home.path().join("state.db")).unwrap();
    // A new session with one turn a night, and the long-lived one growing.
    db.execute(
        "INSERT INTO sessions (id, source, started_at) VALUES ('nexus-world-0777', 'api_server', 1900000000)",
        [],
    )
    .unwrap();
    for night in 0..4 {
        append_turn(
            &db,
            "nexus-world-0777",
            &format!("night {night}: a turn of the new session"),
        );
        append_turn(
            &db,
            "nexus-world-0001",
            &format!("night {night}: one more tick of the long session"),
        );
        cron.ok(
            home.path(),
            &["--min-turns", "2", "--near-duplicate-cap", "0"],
        );
    }
    let got = cron.texts();
    let want = one_shot(
        home.path(),
        &["--min-turns", "2", "--near-duplicate-cap", "0"],
    );
    assert_eq!(got, want);
    assert_eq!(
        got.iter()
            .filter(|t| t.contains("a turn of the new session"))
            .count(),
        4
    );
}

#[test]
fn time_filters_never_consume_what_they_left_out() {
    let home = scratch_home();
    let cron = Cron::new();
    // Only turns up to 2026 first, then only from 2029 on, then everything:
    // every turn lands exactly once.
    cron.ok(home.path(), &["--until", "2026-01-01"]);
    let db = rusqlite::Connection::open(home.path().join("state.db")).unwrap();
    append_turn(&db, "nexus-world-0001", "a turn from the future");
    cron.ok(home.path(), &["--since", "2029-01-01"]);
    assert!(cron.texts().iter().any(|t| t == "a turn from the future"));
    cron.ok(home.path(), &[]);
    assert_eq!(cron.texts(), one_shot(home.path(), &[]));
}

#[test]
fn session_filters_never_consume_what_they_left_out() {
    let home = scratch_home();
    let cron = Cron::new();
    cron.ok(home.path(), &["--channel", "nexus"]);
    let nexus = cron.texts();
    assert_eq!(nexus, one_shot(home.path(), &["--channel", "nexus"]));
    let db = rusqlite::Connection::open(home.path().join("state.db")).unwrap();
    append_turn(&db, "nexus-world-0001", "nexus tick after the first run");
    cron.ok(home.path(), &["--channel", "nexus"]);
    cron.ok(home.path(), &[]);
    assert_eq!(cron.texts(), one_shot(home.path(), &[]));
}

/// A home whose only store is one session file.
fn file_only_home(exchanges: &[(&str, &str)]) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join("sessions")).unwrap();
    write_session_file(home.path(), exchanges);
    home
}

fn write_session_file(home: &Path, exchanges: &[(&str, &str)]) {
    let mut messages = Vec::new();
    for (u, a) in exchanges {
        messages.push(serde_json::json!({"role": "user", "content": u}));
        messages
            .push(serde_json::json!({"role": "assistant", "content": a, "finish_reason": "stop"}));
    }
    let doc = serde_json::json!({
        "session_id": "tui-file-only",
        "platform": "cli",
        "session_start": "2026-11-25T13:00:00",
        "messages": messages,
    });
    std::fs::write(
        home.join("sessions/session_tui-file-only.json"),
        serde_json::to_vec(&doc).unwrap(),
    )
    .unwrap();
}

#[test]
fn a_file_session_rewritten_shorter_keeps_its_next_turn() {
    let home = file_only_home(&[("one", "1"), ("two", "2"), ("three", "3")]);
    let cron = Cron::new();
    cron.ok(home.path(), &[]);
    assert_eq!(cron.texts().len(), 3);
    // /undo of "three", then a new turn: the file is as long as before.
    write_session_file(home.path(), &[("one", "1"), ("two", "2"), ("four", "4")]);
    cron.ok(home.path(), &[]);
    let texts = cron.texts();
    assert!(texts.contains(&"four".to_string()), "{texts:?}");
    assert_eq!(texts.len(), 4, "{texts:?}");
}

#[test]
fn a_one_shot_export_into_the_cron_directory_is_refused() {
    let home = scratch_home();
    let cron = Cron::new();
    cron.ok(home.path(), &[]);
    let before = files_of(&cron.dir);
    let state_before = read(&cron.state);
    let dir = format!("{}/", cron.dir.display());
    let out = run_in(home.path(), &["export", "--out", &dir]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("cumulative"), "{}", stderr(&out));
    assert_eq!(files_of(&cron.dir), before, "nothing changed");
    let db = rusqlite::Connection::open(home.path().join("state.db")).unwrap();
    append_turn(&db, "nexus-world-0001", "after the refused run");
    cron.ok(home.path(), &[]);
    assert_eq!(cron.texts(), one_shot(home.path(), &[]));
    assert_ne!(read(&cron.state), state_before);
}

#[test]
fn a_changed_committed_line_is_refused_not_torn() {
    let home = scratch_home();
    let cron = Cron::new();
    cron.ok(home.path(), &[]);
    // A hand edit that lengthens the first committed line.
    let train = cron.dir.join("train.jsonl");
    let text = String::from_utf8(read(&train)).unwrap();
    let edited = text.replacen("\"content\":\"", "\"content\":\"EDITED ", 1);
    std::fs::write(&train, &edited).unwrap();
    let db = rusqlite::Connection::open(home.path().join("state.db")).unwrap();
    append_turn(&db, "nexus-world-0001", "after the hand edit");
    let out = cron.run(home.path(), &[]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("does not hold what the state file committed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(read(&train), edited.as_bytes(), "the file was not cut");
    lines(edited.as_bytes()); // still whole lines
}

#[test]
fn a_cumulative_file_replaced_by_a_one_shot_export_is_refused() {
    let home = scratch_home();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("all.jsonl");
    let state = work.path().join("state.json");
    let cron = |args: &[&str]| {
        let mut full = vec!["export", "--out", file.to_str().unwrap()];
        full.extend_from_slice(args);
        run_in(home.path(), &full)
    };
    assert_eq!(code(&cron(&["--state", state.to_str().unwrap()])), 0);
    // The mistaken command: a one-shot export of one channel over it.
    assert_eq!(code(&cron(&["--channel", "telegram"])), 0);
    let replaced = read(&file);
    let db = rusqlite::Connection::open(home.path().join("state.db")).unwrap();
    append_turn(&db, "nexus-world-0001", "after the mistake");
    let out = cron(&["--state", state.to_str().unwrap()]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert_eq!(read(&file), replaced, "nothing was cut or appended");
    lines(&replaced);
}

#[test]
fn another_format_into_the_same_directory_is_refused() {
    let home = scratch_home();
    let cron = Cron::new();
    cron.ok(home.path(), &[]);
    let before = files_of(&cron.dir);
    // With the SFT state...
    let out = cron.run(home.path(), &["--format", "dpo"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("one state file per output"),
        "{}",
        stderr(&out)
    );
    // ...and with a state of its own.
    let own = cron.state.with_file_name("dpo.json");
    let dir = format!("{}/", cron.dir.display());
    let out = run_in(
        home.path(),
        &[
            "export",
            "--format",
            "dpo",
            "--out",
            &dir,
            "--state",
            own.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("did not write"), "{}", stderr(&out));
    assert_eq!(files_of(&cron.dir), before, "the SFT dataset is untouched");
    assert!(!own.exists());
}

// ---------------------------------------------------------------------------
// Duplicates

#[test]
fn a_run_that_cannot_read_state_db_does_not_advance() {
    let home = fixture_home(VERSIONS[1]); // 0.13: snapshots and a response store too
    let cron = Cron::new();
    let db_path = home.path().join("state.db");
    let blocker = rusqlite::Connection::open(&db_path).unwrap();
    blocker
        .pragma_update(None, "journal_mode", "delete")
        .unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let dir = format!("{}/", cron.dir.display());
    let out = Command::new(bin())
        .args([
            "export",
            "--out",
            &dir,
            "--state",
            cron.state.to_str().unwrap(),
        ])
        .arg("--hermes-home")
        .arg(home.path())
        .env("HERMES_HARVEST_BUSY_TIMEOUT_MS", "100")
        .output()
        .unwrap();
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(!cron.state.exists(), "state committed without state.db");
    assert!(!cron.dir.join("train.jsonl").exists());
    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);
    cron.ok(home.path(), &[]);
    cron.ok(home.path(), &[]);
    assert_eq!(cron.texts(), one_shot(home.path(), &[]));
}

#[test]
fn review_snapshots_written_after_their_turns_are_not_exported_again() {
    let home = fixture_home(VERSIONS[1]);
    let sessions = home.path().join("sessions");
    let parked = tempfile::tempdir().unwrap();
    let reviews = [
        "session_20261125_133506_6db9e0.json",
        "session_20261125_133624_13f2cb.json",
        "session_20261125_133624_a88a0e.json",
        "session_20261125_133625_98b1d1.json",
    ];
    for r in reviews {
        std::fs::rename(sessions.join(r), parked.path().join(r)).unwrap();
    }
    let cron = Cron::new();
    cron.ok(home.path(), &[]);
    for r in reviews {
        std::fs::rename(parked.path().join(r), sessions.join(r)).unwrap();
    }
    cron.ok(home.path(), &[]);
    assert_eq!(cron.texts(), one_shot(home.path(), &[]));
}

#[test]
fn response_chains_without_a_session_id_are_not_exported_again() {
    let home = fixture_home(VERSIONS[0]);
    std::fs::remove_file(home.path().join("state.db")).unwrap();
    std::fs::remove_dir_all(home.path().join("sessions")).unwrap();
    let rs = rusqlite::Connection::open(home.path().join("response_store.db")).unwrap();
    rs.execute_batch("UPDATE responses SET data = json_remove(data, '$.session_id')")
        .unwrap();
    let cron = Cron::new();
    cron.ok(home.path(), &[]);
    let first = cron.texts();
    assert!(!first.is_empty());
    // The chain goes on: a new response whose history is the longest one
    // plus a new exchange.
    let (id, data): (String, String) = rs
        .query_row(
            "SELECT response_id, data FROM responses WHERE response_id NOT LIKE 'idem:%' ORDER BY json_array_length(data, '$.conversation_history') DESC, response_id LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let mut v: Value = serde_json::from_str(&data).unwrap();
    let history = v["conversation_history"].as_array_mut().unwrap();
    history.push(serde_json::json!({"role": "user", "content": "and one more question"}));
    history.push(serde_json::json!({"role": "assistant", "content": "and one more answer"}));
    rs.execute(
        "INSERT INTO responses (response_id, data, accessed_at) VALUES (?1, ?2, 1900000000)",
        rusqlite::params![format!("{id}-next"), v.to_string()],
    )
    .unwrap();
    drop(rs);
    cron.ok(home.path(), &[]);
    let texts = cron.texts();
    assert_eq!(texts.len(), first.len() + 1, "{texts:?}");
    assert_eq!(texts, one_shot(home.path(), &[]));
}

// ---------------------------------------------------------------------------
// Clobbering

#[test]
fn no_output_or_state_path_may_be_an_input() {
    let home = fixture_home(VERSIONS[0]);
    let before = snapshot_files(home.path());
    let h = home.path();
    let p = |name: &str| h.join(name).display().to_string();
    let work = tempfile::tempdir().unwrap();
    let safe_state = work.path().join("s.json").display().to_string();
    let sessions_dir = format!("{}/", p("sessions"));
    let cases: Vec<Vec<String>> = vec![
        vec!["--out".into(), p("state.db")],
        vec!["--out".into(), p("state.db-wal")],
        vec!["--out".into(), p(".env")],
        vec!["--out".into(), p("config.yaml")],
        vec!["--out".into(), p("response_store.db")],
        vec!["--out".into(), sessions_dir],
        vec!["--out".into(), p("sessions/session_nexus-world-0001.json")],
        vec!["--state".into(), p("config.yaml")],
        vec!["--state".into(), p("state.db")],
        vec!["--out".into(), p("x.jsonl"), "--state".into(), p(".env")],
        vec![
            "--out".into(),
            safe_state.clone(),
            "--state".into(),
            safe_state,
        ],
    ];
    for args in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (c, _, err) = export(h, &args);
        assert_eq!(c, 2, "{args:?}: {err}");
        assert!(err.contains("inputs") || err.contains("same file"), "{err}");
    }
    // A link to an input is the input.
    let link = work.path().join("innocent.jsonl");
    std::os::unix::fs::symlink(h.join("state.db"), &link).unwrap();
    let (c, _, err) = export(h, &["--out", link.to_str().unwrap()]);
    assert_eq!(c, 2, "{err}");
    assert_eq!(snapshot_files(h), before, "no store changed");
}

#[test]
fn out_file_behaves_like_a_shell_redirection() {
    let home = fixture_home(VERSIONS[0]);
    let expected = one_shot(home.path(), &[]);
    let work = tempfile::tempdir().unwrap();
    // A link: written through, atomically at its target; the link stays.
    let real = work.path().join("real.jsonl");
    let link = work.path().join("link.jsonl");
    std::fs::write(&real, b"old\n").unwrap();
    std::os::unix::fs::symlink("real.jsonl", &link).unwrap();
    let (c, _, err) = export(home.path(), &["--out", link.to_str().unwrap()]);
    assert_eq!(c, 0, "{err}");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(sorted(user_texts(&lines(&read(&real)))), expected);
    // A FIFO: written into, never replaced.
    let fifo = work.path().join("pipe.jsonl");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    let out = bounded(export_cmd(home.path(), &["--out", fifo.to_str().unwrap()]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let got = reader.join().unwrap();
    assert_eq!(sorted(user_texts(&lines(&got))), expected);
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
    // A link to a character device is written into, not replaced.
    let null = work.path().join("null.jsonl");
    std::os::unix::fs::symlink("/dev/null", &null).unwrap();
    let (c, _, err) = export(home.path(), &["--out", null.to_str().unwrap()]);
    assert_eq!(c, 0, "{err}");
    assert!(
        std::fs::symlink_metadata(&null)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device()
    );
}

#[test]
fn links_inside_a_managed_directory_are_refused() {
    let home = fixture_home(VERSIONS[0]);
    let work = tempfile::tempdir().unwrap();
    let victim = work.path().join("victim.txt");
    std::fs::write(&victim, b"precious\n").unwrap();
    for (name, with_state) in [
        ("train.jsonl", true),
        ("valid.jsonl", false),
        ("manifest.json", false),
        (".hermes-harvest.lock", false),
    ] {
        let dir = work.path().join(format!("out-{name}"));
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(name)).unwrap();
        let dir_arg = format!("{}/", dir.display());
        let state = work.path().join(format!("{name}.state"));
        let mut args = vec!["--out", dir_arg.as_str()];
        if with_state {
            args.extend(["--state", state.to_str().unwrap()]);
        }
        let (c, _, err) = export(home.path(), &args);
        assert_eq!(c, 1, "{name}: {err}");
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(read(&victim), b"precious\n", "{name} was followed");
    }
    // The state's lock, too.
    let state = work.path().join("st.json");
    std::os::unix::fs::symlink(&victim, work.path().join("st.json.lock")).unwrap();
    let out_file = work.path().join("o.jsonl");
    let (c, _, err) = export(
        home.path(),
        &[
            "--out",
            out_file.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
        ],
    );
    assert_eq!(c, 1, "{err}");
    assert_eq!(read(&victim), b"precious\n", "the lock link was followed");
}

#[test]
fn new_directories_are_owner_only_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let home = fixture_home(VERSIONS[0]);
    let work = tempfile::tempdir().unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for (i, state_inside) in [false, true].into_iter().enumerate() {
        let top = work.path().join(format!("t{i}"));
        let dir = top.join("a/out");
        let state = if state_inside {
            dir.join("state.json")
        } else {
            top.join("st/state.json")
        };
        let status = Command::new("sh")
            .arg("-c")
            .arg(r#"umask 000; exec "$@""#)
            .arg("sh")
            .arg(bin())
            .args(["export", "--quiet", "--hermes-home"])
            .arg(home.path())
            .arg("--out")
            .arg(format!("{}/", dir.display()))
            .arg("--state")
            .arg(&state)
            .status()
            .unwrap();
        assert!(status.success());
        for d in [
            top.clone(),
            top.join("a"),
            dir.clone(),
            state.parent().unwrap().to_path_buf(),
        ] {
            assert_eq!(
                mode(&d),
                0o700,
                "{} (state inside: {state_inside})",
                d.display()
            );
        }
        for f in ["train.jsonl", "valid.jsonl", "manifest.json"] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
        assert_eq!(mode(&state), 0o600);
    }
}

// ---------------------------------------------------------------------------
// Leaks and over-redaction

const LEAKS: &[&str] = &[
    "AAFakeBotApiTokenNotReal0123456789xyz",
    "AAFakeTokenEndingInDash0123456789ab-",
    "correct horse battery staple",
    "MIIEnoENDlinePLANTEDkeyBody",
    "lQOYBPLANTEDpgpBody",
    "WRAPPEDsecondLINE0123456789",
    "/home/filepathplanted",
    "hunter2inURL",
    "dXNlcjpQTEFOVEVEYmFzaWM=",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYPLANTEDKEY",
];

const ORDINARY: &[&str] = &[
    "max 100000 tokens",
    "sorted by timestamp",
    "hunters gather",
    "standard bearer responsibilities",
];

#[test]
fn leaks_are_redacted_and_ordinary_words_are_not() {
    let home = fixture_home(VERSIONS[0]);
    let h = home.path();
    let mut env = std::fs::read_to_string(h.join(".env")).unwrap_or_default();
    env += "\nSTAGING_DB_PASSWORD=\"correct horse battery staple\"\nLOCAL_PASSWORD=hunter\n";
    std::fs::write(h.join(".env"), env).unwrap();
    let mut yaml = std::fs::read_to_string(h.join("config.yaml")).unwrap();
    yaml += "\nlimits:\n  max_tokens: 100000\n  sort_key: timestamp\n";
    std::fs::write(h.join("config.yaml"), yaml).unwrap();
    let planted = [
        "curl https://api.telegram.org/bot7012345678:AAFakeBotApiTokenNotReal0123456789xyz/sendMessage",
        "token 7012345678:AAFakeTokenEndingInDash0123456789ab- ok",
        "staging password correct horse battery staple",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEnoENDlinePLANTEDkeyBody\nAAAAB3Nza",
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBPLANTEDpgpBody\n=x1Yz\n-----END PGP PRIVATE KEY BLOCK-----",
        "key sk-proj-FIRSTlineOFaWRAPPEDkey0123\nWRAPPEDsecondLINE0123456789",
        "open file:///home/filepathplanted/notes.txt",
        "db at postgres://admin:hunter2inURL@db.local/x",
        "Authorization: Basic dXNlcjpQTEFOVEVEYmFzaWM=",
        "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYPLANTEDKEY",
    ];
    let q = |s: &str| s.replace('\'', "''");
    let mut batch = String::new();
    for (i, p) in planted.iter().enumerate() {
        batch += &format!(
            "UPDATE messages SET content = content || ' {}' WHERE role = 'user' AND id % {} = 0;",
            q(p),
            planted.len() + i
        );
    }
    batch += &format!(
        "UPDATE messages SET content = content || ' {}' WHERE role = 'user';",
        q(&ORDINARY.join(" | "))
    );
    batch += &format!(
        "UPDATE messages SET content = content || ' {}' WHERE role = 'tool';",
        q(&planted.join(" | "))
    );
    sql(h, &batch);
    let out = run_in(h, &["export"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let all = String::from_utf8_lossy(&out.stdout).into_owned() + &stderr(&out);
    lines(&out.stdout);
    for s in LEAKS {
        assert!(!all.contains(s), "{s} leaked");
    }
    for s in ORDINARY {
        assert!(all.contains(s), "{s:?} was redacted");
    }
    // The planting really put them there.
    let raw = run_in(h, &["export", "--no-redact"]);
    let raw = String::from_utf8_lossy(&raw.stdout);
    for s in LEAKS {
        assert!(
            raw.contains(&s.replace('\n', "\\n")),
            "planting failed for {s}"
        );
    }
}

// ---------------------------------------------------------------------------
// Hangs, panics and exit codes

fn mkfifo(p: &Path) {
    assert!(Command::new("mkfifo").arg(p).status().unwrap().success());
}

#[test]
fn fifos_and_devices_in_the_home_do_not_hang_the_export() {
    for name in ["state.db", "response_store.db", ".env", "config.yaml"] {
        let home = fixture_home(VERSIONS[0]);
        let path = home.path().join(name);
        std::fs::remove_file(&path).unwrap();
        mkfifo(&path);
        let work = tempfile::tempdir().unwrap();
        let state = work.path().join("state.json");
        let out = bounded(export_cmd(
            home.path(),
            &[
                "--state",
                state.to_str().unwrap(),
                "--out",
                work.path().join("o.jsonl").to_str().unwrap(),
            ],
        ));
        assert_eq!(code(&out), 3, "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains("FIFO"), "{name}: {}", stderr(&out));
        if name == "state.db" {
            assert!(!state.exists(), "a run without state.db committed");
        }
        // The lock is free again: the next run is not refused with 5.
        let out = bounded(export_cmd(
            home.path(),
            &[
                "--state",
                state.to_str().unwrap(),
                "--out",
                work.path().join("o.jsonl").to_str().unwrap(),
            ],
        ));
        assert_ne!(code(&out), 5, "{}", stderr(&out));
    }
    let home = fixture_home(VERSIONS[0]);
    std::fs::remove_file(home.path().join(".env")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", home.path().join(".env")).unwrap();
    let out = bounded(export_cmd(home.path(), &[]));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a regular file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn validate_into_a_closed_pipe_does_not_panic() {
    let work = tempfile::tempdir().unwrap();
    let bad = work.path().join("bad.jsonl");
    std::fs::write(&bad, "not json\n".repeat(20_000)).unwrap();
    let mut validate = Command::new(bin());
    validate.args(["validate", bad.to_str().unwrap()]);
    let (first, out) = first_line_then_close(validate);
    assert!(first.contains("bad.jsonl:1:"), "{first}");
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

#[test]
fn bad_values_are_usage_errors() {
    let home = fixture_home(VERSIONS[0]);
    for args in [
        &["--max-tokens", "0"][..],
        &["--max-tokens", "-5"],
        &["--valid-fraction", "1.5"],
        &["--valid-fraction", "-0.1"],
        &["--valid-fraction", "nan"],
    ] {
        let (c, out, err) = export(home.path(), args);
        assert_eq!(c, 2, "{args:?}: {err}");
        assert!(out.is_empty());
    }
}

// ---------------------------------------------------------------------------
// Risks

/// A home with `n` one-turn sessions named by `id(i)`.
/// `i` spelt in letters, so that exchanges differ beyond their numbers
/// (copies across the splits are judged with numbers masked).
fn letters(i: usize) -> String {
    i.to_string()
        .bytes()
        .map(|b| char::from(b'a' + (b - b'0')))
        .collect()
}

fn many_sessions(n: usize, id: impl Fn(usize) -> String) -> tempfile::TempDir {
    let home = scratch_home();
    std::fs::remove_file(home.path().join("response_store.db")).unwrap();
    std::fs::remove_dir_all(home.path().join("sessions")).unwrap();
    let mut batch = String::from("BEGIN; DELETE FROM messages; DELETE FROM sessions;");
    for i in 0..n {
        let sid = id(i);
        let word = letters(i);
        batch += &format!(
            "INSERT INTO sessions (id, source, started_at) VALUES ('{sid}', 'api_server', 1800000000);
             INSERT INTO messages (session_id, role, content, timestamp) VALUES ('{sid}', 'user', 'hello from {word}', 1800000000);
             INSERT INTO messages (session_id, role, content, timestamp, finish_reason) VALUES ('{sid}', 'assistant', 'hi {word}', 1800000001, 'stop');"
        );
    }
    batch += "COMMIT;";
    sql(home.path(), &batch);
    home
}

#[test]
fn the_split_follows_the_fraction_and_both_sides_hold_data() {
    let home = many_sessions(1000, |i| format!("nexus-world-{i:04}"));
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("o");
    let (c, _, err) = export(
        home.path(),
        &[
            "--near-duplicate-cap",
            "0",
            "--out",
            &format!("{}/", dir.display()),
        ],
    );
    assert_eq!(c, 0, "{err}");
    let valid = lines(&read(&dir.join("valid.jsonl"))).len();
    assert!(
        (25..=75).contains(&valid),
        "{valid} of 1000 in valid at 5 %"
    );

    // Small data: the first unit trains, and valid waits until the
    // fraction makes a whole unit (said in the summary).
    let home = many_sessions(5, |i| format!("s{i}"));
    let small = |fraction: &str, name: &str| {
        let dir = work.path().join(name);
        let (c, _, err) = export(
            home.path(),
            &[
                "--near-duplicate-cap",
                "0",
                "--valid-fraction",
                fraction,
                "--out",
                &format!("{}/", dir.display()),
            ],
        );
        assert_eq!(c, 0, "{err}");
        let train = lines(&read(&dir.join("train.jsonl"))).len();
        let valid = lines(&read(&dir.join("valid.jsonl"))).len();
        (train, valid, err)
    };
    let (train, valid, err) = small("0.05", "small");
    assert_eq!((train, valid), (5, 0));
    assert!(
        !dir_has(&work.path().join("small"), "valid.jsonl"),
        "no 0-byte file"
    );
    assert!(err.contains("no validation file yet"), "{err}");
    let (train, valid, _) = small("0.2", "fifth");
    assert_eq!((train, valid), (4, 1));
}

fn dir_has(dir: &Path, name: &str) -> bool {
    dir.join(name).exists()
}

#[test]
fn control_characters_never_reach_the_terminal() {
    let home = fixture_home(VERSIONS[0]);
    let evil = home
        .path()
        .join("sessions/session_evil\u{1b}]0;pwned\u{7}\u{1b}[31m.json");
    std::fs::write(&evil, b"{broken").unwrap();
    let (c, _, err) = export(home.path(), &[]);
    assert_eq!(c, 3, "{err}");
    assert!(err.contains("evil"), "{err}");
    assert!(!err.contains('\u{1b}') && !err.contains('\u{7}'), "{err:?}");
}

#[test]
fn tool_arguments_nested_too_deep_are_named_not_dropped_silently() {
    let home = fixture_home(VERSIONS[0]);
    let deep = format!("{}1{}", "{\"a\":".repeat(200), "}".repeat(200));
    let calls = serde_json::json!([{"id": "call_deep", "type": "function", "function": {"name": "todo", "arguments": deep}}]).to_string();
    let db = rusqlite::Connection::open(home.path().join("state.db")).unwrap();
    db.execute(
        "INSERT INTO sessions (id, source, started_at) VALUES ('deep-1', 'cli', 1800000000)",
        [],
    )
    .unwrap();
    db.execute_batch(&format!(
        "INSERT INTO messages (session_id, role, content, timestamp) VALUES ('deep-1', 'user', 'plan it', 1800000000);
         INSERT INTO messages (session_id, role, content, tool_calls, timestamp) VALUES ('deep-1', 'assistant', '', '{}', 1800000001);
         INSERT INTO messages (session_id, role, content, tool_call_id, tool_name, timestamp) VALUES ('deep-1', 'tool', 'ok', 'call_deep', 'todo', 1800000002);
         INSERT INTO messages (session_id, role, content, timestamp, finish_reason) VALUES ('deep-1', 'assistant', 'done', 1800000003, 'stop');",
        calls.replace('\'', "''")
    ))
    .unwrap();
    drop(db);
    let (c, _, err) = export(home.path(), &["--session", "deep-1"]);
    assert_eq!(c, 0, "{err}");
    assert!(err.contains("nested deeper than 64"), "{err}");
    assert!(err.contains("tool_arguments_too_deep"), "{err}");
}

// ---------------------------------------------------------------------------
// Kill safety at exact points (no timers)

#[test]
fn a_run_killed_at_each_commit_point_recovers_exactly_once() {
    let home = scratch_home();
    grow(home.path(), 4, "a");
    let work = tempfile::tempdir().unwrap();
    let export = |dir: &Path, stall: Option<&str>| -> Command {
        let mut c = Command::new(bin());
        c.args([
            "export",
            "--hermes-home",
            home.path().to_str().unwrap(),
            "--out",
            &format!("{}/", dir.join("out").display()),
            "--state",
            dir.join("state.json").to_str().unwrap(),
            "--quiet",
        ]);
        if let Some(point) = stall {
            c.env("HERMES_HARVEST_STALL_AT", point);
        }
        c
    };
    let clean = work.path().join("clean");
    let killed = work.path().join("killed");
    for dir in [&clean, &killed] {
        std::fs::create_dir_all(dir).unwrap();
        assert!(export(dir, None).status().unwrap().success());
    }
    grow(home.path(), 4, "b");
    assert!(export(&clean, None).status().unwrap().success());
    let snapshot = |dir: &Path| {
        let mut f = files_of(&dir.join("out"));
        f.push(("state".into(), read(&dir.join("state.json"))));
        f
    };
    let before = snapshot(&killed);
    for point in ["mid-output", "outputs-committed", "before-state"] {
        let mut child = export(&killed, Some(point))
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
        let now = snapshot(&killed);
        assert_eq!(now[3].1, before[3].1, "{point}: the state changed");
        for (name, bytes) in &now[..2] {
            let (_, old) = before.iter().find(|(n, _)| n == name).unwrap();
            assert!(
                bytes.starts_with(old),
                "{point}: {name} lost committed lines"
            );
        }
    }
    assert!(export(&killed, None).status().unwrap().success());
    let (a, b) = (snapshot(&killed), snapshot(&clean));
    assert_eq!(a[0], b[0], "train.jsonl differs from an uninterrupted run");
    assert_eq!(a[1], b[1], "valid.jsonl differs from an uninterrupted run");
}
