//! The nightly cron job: redaction, directory output with manifest,
//! incremental state, lock, kill safety, a live writer.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

/// One planted secret of each kind, with where it goes.
const SECRETS: &[&str] = &[
    "sk-proj-PLANTEDopenaiKEY0123456789abcdefXYZ",
    "sk-ant-api03-PLANTEDanthropic0123456789abcdef",
    "ghp_PLANTEDgithubTOKEN0123456789abcdefghijkl",
    "AIzaSyPLANTEDgoogleKEY0123456789abcdefgh",
    "AKIAPLANTEDAWS012345",
    "xoxb-123456789012-PLANTEDslack",
    "hf_PLANTEDhuggingface0123456789abcdefgh",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJQTEFOVEVEIn0.PLANTEDsignature0123456789",
    "PLANTEDbearerTOKEN0123456789",
    "MIIEPLANTEDprivateKEYbody",
    "7012345678:AAFakeFixtureTokenNotReal-0123456789ab",
    "ci-test-key-0123456789abcdef",
    "/home/timmyplanted",
    "/Users/alexplanted",
];

const NEAR_MISSES: &[&str] = &[
    "the risk-assessment-framework-document",
    "Bearer of bad news",
    "/var/home/shared",
    "port 8642:8642",
    "task-list sk-short",
];

pub(crate) fn sql(home: &Path, batch: &str) {
    let db = rusqlite::Connection::open(home.join("state.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db.execute_batch(batch).unwrap();
}

fn plant_secrets(home: &Path) {
    let q = |s: &str| s.replace('\'', "''");
    let [
        openai,
        anthropic,
        github,
        google,
        aws,
        slack,
        hf,
        jwt,
        bearer,
        pkey,
        telegram,
        configured,
        linux,
        mac,
    ] = SECRETS.try_into().unwrap();
    sql(
        home,
        &format!(
            "UPDATE messages SET content = content || ' key {openai} and {configured} at {linux}/notes' WHERE role = 'user';
             UPDATE messages SET content = content || ' token {anthropic} {telegram} in {mac}/x' WHERE role = 'assistant' AND content <> '';
             UPDATE messages SET reasoning = COALESCE(reasoning, '') || ' {slack}', reasoning_content = COALESCE(reasoning_content, '') || ' {slack}' WHERE role = 'assistant';
             UPDATE messages SET tool_calls = replace(tool_calls, 'greet the archon', 'greet the archon {aws} {github}') WHERE tool_calls IS NOT NULL;
             UPDATE messages SET content = content || ' Authorization: Bearer {bearer} {hf}' WHERE role = 'tool';
             UPDATE sessions SET system_prompt = system_prompt || ' {google} {jwt} -----BEGIN RSA PRIVATE KEY-----\n{pkey}\n-----END RSA PRIVATE KEY-----';
             UPDATE messages SET content = content || ' {}' WHERE role = 'user';",
            q(&NEAR_MISSES.join(" | "))
        ),
    );
}

#[test]
fn planted_secrets_never_reach_the_output_and_near_misses_stay() {
    let home = fixture_home(VERSIONS[0]);
    plant_secrets(home.path());
    let out_dir = tempfile::tempdir().unwrap();
    for format in ["sft", "dpo"] {
        let dir = out_dir.path().join(format);
        let dir_arg = format!("{}/", dir.display());
        let out = run_in(
            home.path(),
            &[
                "export",
                "--format",
                format,
                "--include-reasoning",
                "--tools",
                "all",
                "--system-prompt",
                "session",
                "--max-tokens",
                "100000",
                "--out",
                &dir_arg,
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        let mut all = String::new();
        for f in ["train.jsonl", "valid.jsonl", "manifest.json"] {
            // A split without a line has no file.
            all += &String::from_utf8(read(&dir.join(f))).unwrap();
        }
        all += &stderr;
        for s in SECRETS {
            assert!(!all.contains(s), "{format}: {s} leaked");
        }
        for s in NEAR_MISSES {
            assert!(all.contains(s), "{format}: near miss {s:?} was changed");
        }
        assert!(all.contains("[REDACTED:"), "{format}");
        let manifest: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap())
                .unwrap();
        let red = manifest["redactions"].as_object().unwrap();
        for kind in [
            "openai_key",
            "configured_secret",
            "home_path",
            "bearer",
            "private_key",
            "jwt",
        ] {
            assert!(
                red.get(kind).and_then(Value::as_u64).unwrap_or(0) > 0,
                "{format}: {kind} not counted: {red:?}"
            );
        }
        assert!(stderr.contains("redacted: "), "{stderr}");
    }
    // The planting really put them there.
    let out = run_in(
        home.path(),
        &[
            "export",
            "--no-redact",
            "--include-reasoning",
            "--tools",
            "all",
            "--system-prompt",
            "session",
            "--max-tokens",
            "100000",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for s in SECRETS {
        assert!(text.contains(s), "planting failed for {s}");
    }
}

pub(crate) fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

/// Every line of a directory export (train, then valid; a missing split
/// holds none).
pub(crate) fn dir_lines(dir: &Path) -> Vec<Value> {
    let mut v = Vec::new();
    for f in ["train.jsonl", "valid.jsonl"] {
        v.extend(lines(&read(&dir.join(f))));
    }
    v
}

pub(crate) fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    ["train.jsonl", "valid.jsonl", "manifest.json"]
        .iter()
        .map(|n| (n.to_string(), read(&dir.join(n))))
        .collect()
}

pub fn manifest_schema() -> jsonschema::Validator {
    jsonschema::validator_for(
        &serde_json::from_str(hermes_harvest::validate::MANIFEST_SCHEMA).unwrap(),
    )
    .unwrap()
}

#[test]
fn directory_output_splits_by_session_and_writes_a_valid_manifest() {
    let home = fixture_home(VERSIONS[0]);
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("sft");
    let arg = format!("{}/", dir.display());
    let run1 = run_in(home.path(), &["export", "--out", &arg]);
    assert_eq!(run1.status.code(), Some(0));
    assert!(run1.stdout.is_empty(), "data goes to the files, not stdout");
    let first = files_of(&dir);
    let train = lines(&first[0].1);
    let valid = lines(&first[1].1);
    // Ten sessions, nexus ones cut into days: valid gets about 5 % of the
    // units, and never a unit of train.
    assert!(!valid.is_empty(), "valid holds a unit");
    assert!(!train.is_empty());
    let units = |v: &[Value]| -> std::collections::BTreeSet<String> {
        v.iter()
            .map(|l| l["meta"]["unit"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        units(&train).is_disjoint(&units(&valid)),
        "a unit in both splits"
    );
    let manifest: Value = serde_json::from_slice(&first[2].1).unwrap();
    let schema = manifest_schema();
    let errors: Vec<String> = schema
        .iter_errors(&manifest)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        manifest["split"]["files"]["train.jsonl"]["lines"],
        train.len()
    );
    assert_eq!(
        manifest["split"]["files"]["valid.jsonl"]["lines"],
        valid.len()
    );
    assert_eq!(manifest["sources"][0]["schema_version"], 22);
    // No session is on both sides: the first user turn of each sample names its session.
    let firsts = |v: &[Value]| -> Vec<String> {
        v.iter()
            .map(|l| {
                l["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|m| m["role"] == "user")
                    .unwrap()["content"]
                    .to_string()
            })
            .collect()
    };
    for t in firsts(&train) {
        assert!(!firsts(&valid).contains(&t));
    }
    // Deterministic.
    let run2 = run_in(home.path(), &["export", "--out", &arg]);
    assert_eq!(run2.status.code(), Some(0));
    assert_eq!(files_of(&dir)[..2], first[..2]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["train.jsonl", "valid.jsonl", "manifest.json"] {
            let Ok(meta) = std::fs::metadata(dir.join(f)) else {
                continue;
            };
            let mode = meta.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
    }
}

pub(crate) fn user_texts_in(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for f in ["train.jsonl", "valid.jsonl"] {
        v.extend(user_texts(&lines(&read(&dir.join(f)))));
    }
    v
}

/// Appends one complete exchange to a session, as Hermes does: the user
/// row, then the reply in a later transaction.
pub(crate) fn append_turn(db: &rusqlite::Connection, session: &str, text: &str) {
    let now = 1_900_000_000.0 + text.len() as f64;
    db.execute(
        "INSERT INTO messages (session_id, role, content, timestamp, active, compacted) VALUES (?1, 'user', ?2, ?3, 1, 0)",
        rusqlite::params![session, text, now],
    )
    .unwrap();
    db.execute(
        "INSERT INTO messages (session_id, role, content, timestamp, finish_reason, active, compacted) VALUES (?1, 'assistant', ?2, ?3, 'stop', 1, 0)",
        rusqlite::params![session, format!("Answer to {text}"), now + 1.0],
    )
    .unwrap();
}

#[test]
fn incremental_runs_export_each_new_turn_once_and_nothing_twice() {
    let home = fixture_home(VERSIONS[0]);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("out");
    let dir_arg = format!("{}/", dir.display());
    let state = work.path().join("state.json");
    let state_arg = state.to_str().unwrap();
    let cron = |args: &[&str]| {
        // Context off: this counts each turn as a training target.
        let mut full = vec![
            "export",
            "--sft-context",
            "0",
            "--out",
            &dir_arg,
            "--state",
            state_arg,
        ];
        full.extend_from_slice(args);
        run_in(home.path(), &full)
    };
    let r1 = cron(&[]);
    assert_eq!(r1.status.code(), Some(0));
    let before = user_texts_in(&dir);
    assert!(!before.is_empty());

    let db = rusqlite::Connection::open(home.path().join("state.db")).unwrap();
    append_turn(
        &db,
        "nexus-world-0001",
        "[perception] tick: a new turn in the long-lived session",
    );
    drop(db);
    let r2 = cron(&[]);
    assert_eq!(
        r2.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r2.stderr)
    );
    let after = user_texts_in(&dir);
    assert_eq!(after.len(), before.len() + 1, "exactly one new sample");
    assert_eq!(
        after
            .iter()
            .filter(|u| u.contains("a new turn in the long-lived"))
            .count(),
        1
    );

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o600, "state file");
        assert_eq!(
            mode(&work.path().join("state.json.lock")),
            0o600,
            "lock file"
        );
        assert_eq!(mode(&dir), 0o700, "a new output directory");
    }
    let files = files_of(&dir);
    let state_bytes = read(&state);
    let r3 = cron(&[]);
    assert_eq!(r3.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&r3.stderr).contains("nothing new"),
        "{}",
        String::from_utf8_lossy(&r3.stderr)
    );
    assert_eq!(
        files_of(&dir),
        files,
        "a run with nothing new writes nothing"
    );
    assert_eq!(read(&state), state_bytes);
}

#[test]
fn an_overlapping_run_is_stopped_by_the_lock() {
    let home = fixture_home(VERSIONS[0]);
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state.json");
    let out_file = work.path().join("o.jsonl");
    let export = || {
        let args = [
            "export",
            "--state",
            state.to_str().unwrap(),
            "--out",
            out_file.to_str().unwrap(),
        ];
        run_in(home.path(), &args)
    };
    let lock = std::fs::File::create(work.path().join("state.json.lock")).unwrap();
    lock.try_lock().unwrap();
    let out = export();
    assert_eq!(out.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another run holds"), "{stderr}");
    assert!(!out_file.exists());
    drop(lock);
    let out = export();
    assert_eq!(out.status.code(), Some(0));
}

/// Copies every short captured session `times` times under new ids (a
/// larger store).
pub(crate) fn grow(home: &Path, times: usize, tag: &str) {
    let mut batch = String::from("BEGIN;");
    for k in 0..times {
        let sfx = format!("~{tag}{k}");
        batch += &format!(
            "CREATE TEMP TABLE s AS SELECT * FROM sessions WHERE id NOT LIKE '%~%' AND id IN (SELECT session_id FROM messages GROUP BY session_id HAVING MAX(length(content)) < 3000);
             UPDATE s SET id = id || '{sfx}', title = CASE WHEN title IS NULL THEN NULL ELSE title || '{sfx}' END, parent_session_id = NULL;
             CREATE TEMP TABLE m AS SELECT * FROM messages WHERE session_id IN (SELECT substr(id, 1, length(id) - {}) FROM s);
             UPDATE m SET id = NULL, session_id = session_id || '{sfx}', content = content || ' ({tag}{k})';
             INSERT INTO sessions SELECT * FROM s;
             INSERT INTO messages SELECT * FROM m ORDER BY rowid;
             DROP TABLE s; DROP TABLE m;",
            sfx.len()
        );
    }
    batch += "COMMIT;";
    sql(home, &batch);
}

/// The files of one directory export with `--state`.
struct RunFiles {
    train: Vec<u8>,
    valid: Vec<u8>,
    manifest: Vec<u8>,
    state: Vec<u8>,
}

fn run_files(dir: &Path) -> RunFiles {
    let out = dir.join("out");
    RunFiles {
        train: read(&out.join("train.jsonl")),
        valid: read(&out.join("valid.jsonl")),
        manifest: read(&out.join("manifest.json")),
        state: read(&dir.join("state.json")),
    }
}

/// A manifest without its `flags` (they hold the run's own paths) and its
/// `created` time (each run's own clock).
fn without_flags(manifest: &[u8]) -> Value {
    let mut v: Value = serde_json::from_slice(manifest).expect("a manifest");
    let o = v.as_object_mut().expect("an object");
    o.remove("flags");
    o.remove("created");
    v
}

#[test]
fn a_killed_run_leaves_everything_intact_and_the_rerun_matches() {
    let home = fixture_home(VERSIONS[0]);
    // Drop the FTS triggers in this scratch copy so growing it is quick.
    let db = rusqlite::Connection::open(home.path().join("state.db")).unwrap();
    drop_fts_triggers(&db);
    drop(db);
    grow(home.path(), 40, "a");
    let work = tempfile::tempdir().unwrap();
    let killed = work.path().join("killed");
    let clean = work.path().join("clean");
    let export = |dir: &Path| -> Command {
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
            // The grown turns differ only in their numbers: all of them
            // are data here.
            "--near-duplicate-cap",
            "0",
        ]);
        c
    };
    for dir in [&killed, &clean] {
        std::fs::create_dir_all(dir).unwrap();
        assert!(export(dir).status().unwrap().success());
    }
    // More data arrives; the clean copy takes it in one go.
    grow(home.path(), 40, "b");
    let start = Instant::now();
    assert!(export(&clean).status().unwrap().success());
    let full_time = start.elapsed();

    let before = run_files(&killed);
    for step in 1..=12u32 {
        let delay = full_time.mul_f64(f64::from(step) / 10.0);
        let mut child = export(&killed)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_some() {
            break; // it finished before the kill
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // Wherever the kill landed (the machine's load decides), the state
        // is the old one or the final one, whole; with the old state the
        // outputs still start with what it committed (the next run cuts
        // them back), with the final one they are the clean run's.
        let now = run_files(&killed);
        if now.state == before.state {
            for (name, bytes, old) in [
                ("train.jsonl", &now.train, &before.train),
                ("valid.jsonl", &now.valid, &before.valid),
            ] {
                assert!(
                    bytes.starts_with(old),
                    "{name} lost committed lines after kill at {delay:?}"
                );
            }
        } else {
            let clean_now = run_files(&clean);
            assert!(
                serde_json::from_slice::<Value>(&now.state).is_ok()
                    && now.train == clean_now.train
                    && now.valid == clean_now.valid,
                "state half-written after kill at {delay:?}"
            );
        }
    }
    // Whether a timed kill lands mid-run depends on the machine's load, so
    // it is not asserted here: `integrity::a_run_killed_at_each_commit_point…`
    // kills at exact points through HERMES_HARVEST_STALL_AT.
    assert!(export(&killed).status().unwrap().success());
    let (a, b) = (run_files(&killed), run_files(&clean));
    assert!(
        a.train == b.train,
        "train.jsonl differs from an uninterrupted run"
    );
    assert!(
        a.valid == b.valid,
        "valid.jsonl differs from an uninterrupted run"
    );
    // The manifests differ only in the flags, which name each directory.
    assert_eq!(
        without_flags(&a.manifest),
        without_flags(&b.manifest),
        "manifest differs from an uninterrupted run beyond its flags"
    );
    let leftovers: Vec<_> = std::fs::read_dir(killed.join("out"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "stale temporary files remain: {leftovers:?}"
    );
}

#[test]
fn back_to_back_runs_against_a_live_writer_lose_and_duplicate_nothing() {
    let home = fixture_home(VERSIONS[0]);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("out");
    let dir_arg = format!("{}/", dir.display());
    let state = work.path().join("state.json");
    let db_path = home.path().join("state.db");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let db = rusqlite::Connection::open(db_path).unwrap();
            db.busy_timeout(Duration::from_secs(10)).unwrap();
            db.pragma_update(None, "journal_mode", "wal").unwrap();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                append_turn(
                    &db,
                    "nexus-world-0001",
                    &format!("[perception] tick: live writer turn {n:05}"),
                );
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            n
        })
    };
    let cron = || {
        run_ok(
            home.path(),
            &[
                "export",
                "--sft-context",
                "0",
                "--near-duplicate-cap",
                "0",
                "--out",
                &dir_arg,
                "--state",
                state.to_str().unwrap(),
            ],
        );
    };
    std::thread::sleep(Duration::from_millis(100));
    cron();
    cron();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap();
    cron();
    let texts = user_texts_in(&dir);
    let live: Vec<&String> = texts
        .iter()
        .filter(|t| t.contains("live writer turn"))
        .collect();
    let mut unique = live.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), live.len(), "a live turn was exported twice");
    assert_eq!(live.len(), written, "every written turn was exported once");
    // And the totals equal one export of the final store.
    let full = run_in(home.path(), &["export", "--near-duplicate-cap", "0"]);
    let mut expected = user_texts(&lines(&full.stdout));
    let mut got = texts.clone();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
}

#[test]
fn an_open_write_transaction_does_not_block_or_leak_into_the_export() {
    let home = fixture_home(VERSIONS[0]);
    let before = read(&home.path().join("state.db"));
    let db = rusqlite::Connection::open(home.path().join("state.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    append_turn(
        &db,
        "nexus-world-0001",
        "[perception] tick: not committed yet",
    );
    let out = run_in(home.path(), &["export", "--channel", "nexus"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("not committed yet"));
    db.execute_batch("ROLLBACK").unwrap();
    drop(db);
    assert_eq!(
        read(&home.path().join("state.db")),
        before,
        "the store file is unchanged"
    );
}

// ---------------------------------------------------------------------------
// A month of nights (issue 18): each reproduction as a test.

/// The 0.19 capture's state.db emptied (no other store): a home to fill by
/// hand.
fn bare_home() -> tempfile::TempDir {
    let home = emptied_state_db();
    std::fs::remove_file(home.path().join("response_store.db")).unwrap();
    std::fs::remove_dir_all(home.path().join("sessions")).unwrap();
    home
}

/// A session with one exchange at `t`, its texts made of `word`.
fn exchange(home: &Path, session: &str, source: &str, t: f64, word: &str) {
    sql(
        home,
        &format!(
            "INSERT OR IGNORE INTO sessions (id, source, started_at) VALUES ('{session}', '{source}', {t});
             INSERT INTO messages (session_id, role, content, timestamp, active, compacted) VALUES ('{session}', 'user', 'tell me about {word}', {t}, 1, 0);
             INSERT INTO messages (session_id, role, content, timestamp, finish_reason, active, compacted) VALUES ('{session}', 'assistant', 'all about {word}', {}, 'stop', 1, 0);",
            t + 1.0
        ),
    );
}

fn word(i: usize) -> String {
    crate::soak::word(i)
}

/// `export --out DIR/ --state STATE --near-duplicate-cap 0` plus `extra`.
fn nightly(home: &Path, work: &Path, extra: &[&str]) -> std::process::Output {
    let dir = format!("{}/", work.join("out").display());
    let state = work.join("state.json");
    let mut args = vec![
        "export",
        "--out",
        &dir,
        "--state",
        state.to_str().unwrap(),
        "--near-duplicate-cap",
        "0",
    ];
    args.extend_from_slice(extra);
    run_in(home, &args)
}

fn killed(mut cmd: Command, point: &str) {
    cmd.env("HERMES_HARVEST_STALL_AT", point);
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stderr.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.contains(&format!("stalled at {point}")), "{line}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_killed_first_night_is_finished_by_the_next_run() {
    let home = fixture_home(VERSIONS[0]);
    let clean = tempfile::tempdir().unwrap();
    assert_eq!(
        nightly(home.path(), clean.path(), &[]).status.code(),
        Some(0)
    );
    let want = files_of(&clean.path().join("out"));
    // (`soak` kills a first night at mid-output: the capture alone has
    // fewer lines than that point.)
    for point in ["outputs-committed", "before-state"] {
        let work = tempfile::tempdir().unwrap();
        let dir = format!("{}/", work.path().join("out").display());
        let state = work.path().join("state.json");
        let mut cmd = Command::new(bin());
        cmd.args(["export", "--out", &dir, "--state", state.to_str().unwrap()])
            .args(["--near-duplicate-cap", "0", "--hermes-home"])
            .arg(home.path());
        killed(cmd, point);
        let out = nightly(home.path(), work.path(), &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{point}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = files_of(&work.path().join("out"));
        assert_eq!(
            got[..2],
            want[..2],
            "{point}: the files differ from a clean first night"
        );
    }
    // The same with one --out FILE.
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("all.jsonl");
    let state = work.path().join("state.json");
    let args = |c: &mut Command| {
        c.args(["export", "--out", file.to_str().unwrap()])
            .args(["--state", state.to_str().unwrap(), "--hermes-home"])
            .arg(home.path());
    };
    let mut cmd = Command::new(bin());
    args(&mut cmd);
    killed(cmd, "before-state");
    let mut cmd = Command::new(bin());
    args(&mut cmd);
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = lines(&read(&file)).len();
    let once = run_in(home.path(), &["export"]);
    assert_eq!(
        n,
        lines(&once.stdout).len(),
        "the file holds one night, once"
    );
}

#[test]
fn a_line_appended_by_hand_is_refused_and_named() {
    let home = fixture_home(VERSIONS[0]);
    let work = tempfile::tempdir().unwrap();
    assert_eq!(
        nightly(home.path(), work.path(), &[]).status.code(),
        Some(0)
    );
    let train = work.path().join("out/train.jsonl");
    let mut text = read(&train);
    let first = text.split(|b| *b == b'\n').next().unwrap().to_vec();
    text.extend_from_slice(&first);
    text.push(b'\n');
    std::fs::write(&train, &text).unwrap();
    let out = nightly(home.path(), work.path(), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("train.jsonl") && err.contains("added by hand"),
        "{err}"
    );
    assert_eq!(read(&train), text, "nothing was cut");
}

#[test]
fn one_nexus_world_one_turn_a_night_trains_and_no_line_moves() {
    let home = bare_home();
    let work = tempfile::tempdir().unwrap();
    let (mut train, mut valid) = (Vec::new(), Vec::new());
    for night in 0..25 {
        let t = 1_800_000_000.0 + 86_400.0 * night as f64;
        exchange(
            home.path(),
            "nexus-world-0001",
            "api_server",
            t,
            &word(night),
        );
        let out = nightly(home.path(), work.path(), &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let now_train = read(&work.path().join("out/train.jsonl"));
        let now_valid = read(&work.path().join("out/valid.jsonl"));
        assert!(!now_train.is_empty(), "night {night}: train.jsonl is empty");
        assert!(
            now_train.starts_with(&train) && now_valid.starts_with(&valid),
            "night {night}: a line moved"
        );
        (train, valid) = (now_train, now_valid);
    }
    // 25 day units at 5 %: one in valid, and its day is in no train line.
    let units = |b: &[u8]| -> std::collections::BTreeSet<String> {
        lines(b)
            .iter()
            .map(|l| l["meta"]["unit"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(units(&valid).len(), 1, "valid holds one day");
    assert_eq!(units(&train).len(), 24);
    assert!(units(&train).is_disjoint(&units(&valid)));
    for l in lines(&valid) {
        let users = user_texts(std::slice::from_ref(&l));
        assert_eq!(
            users.len(),
            1,
            "valid's day carries no other day as context: {users:?}"
        );
    }
}

#[test]
fn a_changed_fraction_applies_to_new_units_only_and_says_so() {
    let home = bare_home();
    let work = tempfile::tempdir().unwrap();
    for i in 0..40 {
        exchange(
            home.path(),
            &format!("s-{}", word(i)),
            "cli",
            1_800_000_000.0,
            &word(i),
        );
    }
    assert_eq!(
        nightly(home.path(), work.path(), &[]).status.code(),
        Some(0)
    );
    let before = (
        read(&work.path().join("out/train.jsonl")),
        read(&work.path().join("out/valid.jsonl")),
    );
    for i in 40..60 {
        exchange(
            home.path(),
            &format!("s-{}", word(i)),
            "cli",
            1_800_000_000.0,
            &word(i),
        );
    }
    let out = nightly(home.path(), work.path(), &["--valid-fraction", "0.5"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("applies to units new from now on"), "{err}");
    let train = read(&work.path().join("out/train.jsonl"));
    let valid = read(&work.path().join("out/valid.jsonl"));
    assert!(train.starts_with(&before.0) && valid.starts_with(&before.1));
    let new_valid = lines(&valid).len() - lines(&before.1).len();
    assert_eq!(new_valid, 10, "half of the 20 new units");
    let sessions = |b: &[u8]| -> std::collections::BTreeSet<String> {
        lines(b)
            .iter()
            .map(|l| l["meta"]["session"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(sessions(&train).is_disjoint(&sessions(&valid)));
}

#[test]
fn an_empty_night_leaves_a_manifest_a_card_and_no_empty_file() {
    let home = bare_home();
    let work = tempfile::tempdir().unwrap();
    let out = nightly(home.path(), work.path(), &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = work.path().join("out");
    let m: Value = serde_json::from_slice(&read(&dir.join("manifest.json"))).unwrap();
    let errors: Vec<String> = manifest_schema()
        .iter_errors(&m)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(m["dataset"]["lines"]["train.jsonl"], 0);
    assert!(dir.join("README.md").exists());
    assert!(!dir.join("train.jsonl").exists() && !dir.join("valid.jsonl").exists());
    let out = nightly(home.path(), work.path(), &["--fail-on-empty"]);
    assert_eq!(out.status.code(), Some(6));
    // A user's own README.md stays; the card goes beside it, said once.
    std::fs::write(dir.join("README.md"), "my notes\n").unwrap();
    exchange(home.path(), "s-a", "cli", 1_800_000_000.0, "apples");
    let out = nightly(home.path(), work.path(), &["--fail-on-empty"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("DATASET_CARD.md"), "{err}");
    assert_eq!(read(&dir.join("README.md")), b"my notes\n");
    assert!(
        String::from_utf8(read(&dir.join("DATASET_CARD.md")))
            .unwrap()
            .contains("| train.jsonl | 1 |")
    );
    exchange(home.path(), "s-b", "cli", 1_800_000_000.0, "pears");
    let out = nightly(home.path(), work.path(), &[]);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("DATASET_CARD.md"),
        "said once"
    );
}

#[test]
fn forget_takes_any_lineage_id_lists_first_and_survives_a_kill() {
    let home = bare_home();
    let t = 1_800_000_000.0;
    exchange(home.path(), "root-a", "cli", t, "apples");
    sql(
        home.path(),
        &format!(
            "UPDATE sessions SET end_reason = 'compression', ended_at = {} WHERE id = 'root-a';
             INSERT INTO sessions (id, source, started_at, parent_session_id) VALUES ('child-a', 'cli', {}, 'root-a');",
            t + 5.0,
            t + 6.0
        ),
    );
    exchange(home.path(), "child-a", "cli", t + 10.0, "pears");
    exchange(home.path(), "keep-b", "cli", t, "plums");
    let work = tempfile::tempdir().unwrap();
    assert_eq!(
        nightly(home.path(), work.path(), &[]).status.code(),
        Some(0)
    );
    let dir = work.path().join("out");
    let state = work.path().join("state.json");
    let before = (files_of(&dir), read(&state));
    let sessions = || -> Vec<String> {
        lines(&read(&dir.join("train.jsonl")))
            .iter()
            .map(|l| l["meta"]["session"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        sessions().contains(&"root-a".to_string()),
        "{:?}",
        sessions()
    );
    let forget = |extra: &[&str]| {
        let mut c = Command::new(bin());
        c.args(["forget", "--out", &format!("{}/", dir.display())])
            .args(["--state", state.to_str().unwrap()])
            .args(extra)
            .arg("child-a");
        c
    };
    // A dry run lists and changes nothing.
    let out = forget(&["--dry-run"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("would be removed"));
    assert_eq!((files_of(&dir), read(&state)), before);
    // Killed before its commit: nothing changed.
    killed(forget(&[]), "forget-staged");
    assert_eq!((files_of(&dir), read(&state)), before);
    let prints = |s: &[u8]| {
        let v: Value = serde_json::from_slice(s).unwrap();
        v["curation"]["exact"].as_str().unwrap_or("").len() / 16
    };
    let out = forget(&[]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        sessions(),
        ["keep-b"],
        "the child's id forgot the whole lineage"
    );
    assert_eq!(
        prints(&read(&state)),
        prints(&before.1) - 1,
        "its fingerprint left"
    );
    // Nothing of the lineage comes back.
    exchange(home.path(), "child-a", "cli", t + 20.0, "figs");
    let out = nightly(home.path(), work.path(), &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(sessions(), ["keep-b"]);
    assert!(!dir.join(".hermes-harvest-staged-train.jsonl").exists());
}

#[test]
fn forget_tells_the_sessions_of_lines_without_meta_from_the_state() {
    let home = bare_home();
    for (i, s) in ["s-a", "s-b", "s-c"].iter().enumerate() {
        exchange(home.path(), s, "cli", 1_800_000_000.0, &word(i + 1));
    }
    let work = tempfile::tempdir().unwrap();
    let out = nightly(home.path(), work.path(), &["--no-meta"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let train = work.path().join("out/train.jsonl");
    assert_eq!(lines(&read(&train)).len(), 3);
    let o = run(&[
        "forget",
        "--out",
        &format!("{}/", work.path().join("out").display()),
        "--state",
        work.path().join("state.json").to_str().unwrap(),
        "s-b",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let users = user_texts(&lines(&read(&train)));
    assert_eq!(users.len(), 2);
    assert!(users.iter().all(|u| !u.contains(&word(2))), "{users:?}");
    exchange(home.path(), "s-b", "cli", 1_800_000_100.0, "later");
    exchange(home.path(), "s-d", "cli", 1_800_000_100.0, "more");
    let out = nightly(home.path(), work.path(), &["--no-meta"]);
    assert_eq!(out.status.code(), Some(0));
    let users = user_texts(&lines(&read(&train)));
    assert_eq!(users.len(), 3, "{users:?}");
    assert!(users.iter().all(|u| !u.contains("later")));
}

#[test]
fn a_version_3_state_is_migrated_and_its_sessions_keep_their_split() {
    let home = bare_home();
    for i in 0..40 {
        exchange(
            home.path(),
            &format!("s-{}", word(i)),
            "cli",
            1_800_000_000.0,
            &word(i),
        );
    }
    let work = tempfile::tempdir().unwrap();
    assert_eq!(
        nightly(home.path(), work.path(), &[]).status.code(),
        Some(0)
    );
    // What version 3 wrote: no units, the old split name.
    let path = work.path().join("state.json");
    let mut st: Value = serde_json::from_slice(&read(&path)).unwrap();
    st["version"] = 3.into();
    st.as_object_mut().unwrap().remove("units");
    st["identity"]["split"] = "fnv1a-fmix64".into();
    std::fs::write(&path, st.to_string()).unwrap();
    let before = files_of(&work.path().join("out"));
    for i in 40..80 {
        exchange(
            home.path(),
            &format!("s-{}", word(i)),
            "cli",
            1_800_000_000.0,
            &word(i),
        );
    }
    let out = nightly(home.path(), work.path(), &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let now = files_of(&work.path().join("out"));
    assert!(now[0].1.starts_with(&before[0].1) && now[1].1.starts_with(&before[1].1));
    let st: Value = serde_json::from_slice(&read(&path)).unwrap();
    assert_eq!(st["version"], 4);
    assert_eq!(st["tool_version"], env!("CARGO_PKG_VERSION"));
    let units = st["units"]["train"].as_array().unwrap().len()
        + st["units"]["valid"].as_array().map_or(0, Vec::len);
    assert_eq!(units, 80, "every session placed once");
}

#[test]
fn a_night_with_nothing_new_leaves_no_empty_split_file() {
    // Too few units for a validation split: valid.jsonl is never made, and
    // a later night that finds nothing new must not leave it empty (a
    // 0-byte split file makes loaders fail, and validate refuses it).
    let home = fixture_home(VERSIONS[0]);
    let work = tempfile::tempdir().unwrap();
    let out = format!("{}/", work.path().join("out").display());
    let state = work.path().join("state.json");
    let args = [
        "--format",
        "dpo",
        "--out",
        &out,
        "--state",
        state.to_str().unwrap(),
    ];
    for night in 1..=2 {
        let (code, _, stderr) = export(home.path(), &args);
        assert_eq!(code, 0, "night {night}: {stderr}");
        assert!(
            !work.path().join("out/valid.jsonl").exists(),
            "night {night}"
        );
        let check = run(&["validate", &out, "--state", state.to_str().unwrap()]);
        assert_eq!(
            check.status.code(),
            Some(0),
            "night {night}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
}

#[test]
fn session_file_copies_under_other_ids_are_never_exported_on_a_later_night() {
    // Hermes can keep a session's turns both in state.db and in a session
    // file under another id (0.13's snapshots of compaction and retry
    // sessions). Here every state.db session gets a new id, so each file
    // is a copy that only its turns' prints tie to state.db. The first
    // night exports every turn once, from state.db; the second reads the
    // files again but not the untouched state.db sessions, and must find
    // nothing new (a copy left uncovered was exported then).
    let home = fixture_home(VERSIONS[0]);
    let _ = std::fs::remove_file(home.path().join("response_store.db"));
    sql(
        home.path(),
        "PRAGMA foreign_keys = OFF;
         UPDATE messages SET session_id = 'db-' || session_id;
         UPDATE sessions SET id = 'db-' || id,
             parent_session_id = 'db-' || parent_session_id;",
    );
    let work = tempfile::tempdir().unwrap();
    let flags = ["--sft-context", "0"];
    let first = nightly(home.path(), work.path(), &flags);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("turn_already_in_state_db="), "{stderr}");
    let before = dir_lines(&work.path().join("out"));
    let (fresh_code, fresh, _) = export(
        home.path(),
        &["--sft-context", "0", "--near-duplicate-cap", "0"],
    );
    assert_eq!(fresh_code, 0);
    assert_eq!(
        targets(&before),
        targets(&fresh),
        "the first night against a fresh export"
    );
    let second = nightly(home.path(), work.path(), &flags);
    assert_eq!(second.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("nothing new"), "{stderr}");
    assert_eq!(dir_lines(&work.path().join("out")), before);
}
