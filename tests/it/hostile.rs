//! Hostile inputs: FIFOs, devices, links and huge files at every path the
//! tool reads; templates that loop, recurse or allocate; every output path
//! aimed at every input and output. Every child runs under a timeout, and a
//! timeout is a failure (the run hung), never a timing measurement.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::common;

/// Long enough for any honest run on a loaded machine; a run that needs it
/// has hung.
const LIMIT: Duration = Duration::from_secs(120);

/// Runs the binary with `args` (and `--hermes-home HOME` when given) under
/// [`LIMIT`]; panics if the child had to be killed.
fn run(home: Option<&Path>, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = assert_cmd::Command::new(common::bin());
    for var in [
        "HERMES_HOME",
        "API_SERVER_KEY",
        "HERMES_API_URL",
        "API_SERVER_HOST",
        "API_SERVER_PORT",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(args);
    if let Some(h) = home {
        cmd.arg("--hermes-home").arg(h);
    }
    cmd.write_stdin(stdin.unwrap_or_default().to_vec());
    let out = cmd.timeout(LIMIT).output().expect("run binary");
    assert!(
        out.status.code().is_some(),
        "{args:?} hung or was killed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A FIFO, a link to `/dev/zero`, a sparse file past every size limit.
#[derive(Debug, Clone, Copy)]
enum Bad {
    Fifo,
    Zero,
    Huge,
}

const BAD: [Bad; 3] = [Bad::Fifo, Bad::Zero, Bad::Huge];

/// Replaces `path` with `bad`.
fn plant(path: &Path, bad: Bad) {
    let _ = std::fs::remove_file(path);
    match bad {
        Bad::Fifo => {
            let ok = std::process::Command::new("mkfifo").arg(path).status();
            assert!(ok.expect("mkfifo").success());
        }
        Bad::Zero => std::os::unix::fs::symlink("/dev/zero", path).unwrap(),
        Bad::Huge => {
            let f = std::fs::File::create(path).unwrap();
            f.set_len(300 << 20).unwrap(); // sparse: no disk used
        }
    }
}

fn home() -> tempfile::TempDir {
    common::fixture_home("hermes-0.19.0")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A copy of the committed tokenizer directory.
fn tokenizer_copy(into: &Path) -> PathBuf {
    let dir = into.join("tok");
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(common::tokenizer_dir()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    dir
}

#[test]
fn soul_md_that_is_no_regular_file_warns_and_never_hangs() {
    for bad in BAD {
        let h = home();
        plant(&h.path().join("SOUL.md"), bad);
        let out_dir = tempfile::tempdir().unwrap();
        let state = out_dir.path().join("s.json");
        let out = out_dir.path().join("o.jsonl");
        let args = [
            "export",
            "--system-prompt",
            "soul",
            "--state",
            s(&state),
            "--out",
            s(&out),
        ];
        let o = run(Some(h.path()), &args, None);
        assert_eq!(code(&o), 0, "{bad:?}: {}", err(&o));
        assert!(err(&o).contains("SOUL.md"), "{bad:?}: {}", err(&o));
        // The lock was released: the next night runs.
        let o = run(Some(h.path()), &args, None);
        assert_eq!(code(&o), 0, "{bad:?}: {}", err(&o));
    }
}

#[test]
fn system_prompt_file_that_is_no_regular_file_is_refused() {
    let h = home();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("prompt.txt");
    for bad in BAD {
        plant(&p, bad);
        let o = run(Some(h.path()), &["export", "--system-prompt", s(&p)], None);
        assert_ne!(code(&o), 0, "{bad:?}");
        assert!(err(&o).contains("--system-prompt"), "{bad:?}: {}", err(&o));
        assert!(o.stdout.is_empty());
    }
    let o = run(
        Some(h.path()),
        &["export", "--system-prompt", "/dev/zero"],
        None,
    );
    assert!(err(&o).contains("not a regular file"), "{}", err(&o));
}

#[test]
fn tokenizer_files_that_are_no_regular_files_are_refused() {
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "chat_template.jinja",
    ] {
        for bad in BAD {
            let h = home();
            let tok = tokenizer_copy(h.path());
            plant(&tok.join(name), bad);
            let o = run(Some(h.path()), &["export", "--tokenizer", s(&tok)], None);
            assert_ne!(code(&o), 0, "{name} {bad:?}");
            assert!(err(&o).contains(name), "{name} {bad:?}: {}", err(&o));
            assert!(o.stdout.is_empty(), "{name} {bad:?}");
        }
    }
}

#[test]
fn send_event_that_is_no_regular_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("event.json");
    for bad in BAD {
        plant(&p, bad);
        let o = run(
            None,
            &["send", "--event", s(&p), "--url", "http://127.0.0.1:9"],
            None,
        );
        assert_eq!(code(&o), 2, "{bad:?}: {}", err(&o));
        assert!(err(&o).contains("event"), "{bad:?}: {}", err(&o));
    }
    // stdin past the limit
    let big = vec![b' '; (1 << 20) + 10];
    let o = run(
        None,
        &["send", "--event", "-", "--url", "http://127.0.0.1:9"],
        Some(&big),
    );
    assert_eq!(code(&o), 2, "{}", err(&o));
}

#[test]
fn a_session_file_that_is_no_regular_file_warns_and_exits_3() {
    for bad in BAD {
        let h = home();
        let sessions = h.path().join("sessions");
        let victim = std::fs::read_dir(&sessions)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.extension().is_some_and(|e| e == "json")
                    && p.file_name()
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .starts_with("session_")
            })
            .unwrap();
        plant(&victim, bad);
        let name = victim.file_name().unwrap().to_str().unwrap().to_string();
        let o = run(Some(h.path()), &["export"], None);
        assert_eq!(code(&o), 3, "{bad:?}: {}", err(&o));
        assert!(err(&o).contains(&name), "{bad:?}: {}", err(&o));
        common::lines(&o.stdout);
        let o = run(Some(h.path()), &["export", "--strict"], None);
        assert_ne!(code(&o), 0, "{bad:?}: --strict: {}", err(&o));
        assert_ne!(code(&o), 3, "{bad:?}: --strict is fatal: {}", err(&o));
        // And a transcript.
        let t = sessions.join("planted.jsonl");
        plant(&t, bad);
        let o = run(Some(h.path()), &["export"], None);
        assert_eq!(code(&o), 3, "{bad:?}: {}", err(&o));
        assert!(err(&o).contains("planted.jsonl"), "{bad:?}: {}", err(&o));
    }
}

#[test]
fn settings_and_stores_that_are_no_regular_files_never_hang() {
    for name in [
        ".env",
        "config.yaml",
        "state.db",
        "response_store.db",
        "sessions/sessions.json",
    ] {
        for bad in [Bad::Fifo, Bad::Zero] {
            let h = home();
            plant(&h.path().join(name), bad);
            let o = run(Some(h.path()), &["export"], None);
            assert!(
                [1, 3].contains(&code(&o)),
                "{name} {bad:?}: {} {}",
                code(&o),
                err(&o)
            );
            let base = Path::new(name).file_name().unwrap().to_str().unwrap();
            assert!(err(&o).contains(base), "{name} {bad:?}: {}", err(&o));
        }
    }
}

#[test]
fn a_state_file_that_is_no_regular_file_is_refused() {
    let h = home();
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("s.json");
    for bad in BAD {
        plant(&st, bad);
        let out = dir.path().join("o.jsonl");
        let o = run(
            Some(h.path()),
            &["export", "--state", s(&st), "--out", s(&out)],
            None,
        );
        assert!([1, 2].contains(&code(&o)), "{bad:?}: {}", err(&o));
        assert!(err(&o).contains("s.json"), "{bad:?}: {}", err(&o));
    }
}

/// Exports the tui channel (one sample) with `template` as the chat template.
fn export_with_template(template: &str) -> Output {
    let h = home();
    let tok = tokenizer_copy(h.path());
    std::fs::write(tok.join("chat_template.jinja"), template).unwrap();
    let o = run(
        Some(h.path()),
        &["export", "--channel", "tui", "--tokenizer", s(&tok)],
        None,
    );
    assert!(!err(&o).contains("panicked"), "{}", err(&o));
    o
}

#[test]
fn a_template_that_loops_runs_out_of_fuel() {
    let o = export_with_template(
        "{% for a in range(100000) %}{% for b in range(100000) %}{{ b }}{% endfor %}{% endfor %}",
    );
    // The probe sample runs it before any store is read: a usage error.
    assert_eq!(code(&o), 2, "{}", err(&o));
    assert!(err(&o).contains("out of fuel"), "{}", err(&o));
    assert!(o.stdout.is_empty());
}

#[test]
fn a_template_that_recurses_hits_the_recursion_limit() {
    let o = export_with_template("{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}{{ r(0) }}");
    assert_eq!(code(&o), 2, "{}", err(&o));
    assert!(err(&o).contains("recursion limit"), "{}", err(&o));
}

#[test]
fn a_template_that_doubles_a_string_stops_with_a_named_error_not_an_abort() {
    for t in [
        "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
        "{% macro d(s, n) %}{% if n %}{{ d(s ~ s, n - 1) }}{% else %}{{ s|length }}{% endif %}{% endmacro %}{{ d('ab', 40) }}",
    ] {
        let o = export_with_template(t);
        assert_eq!(code(&o), 2, "{}", err(&o));
        assert!(
            err(&o).contains("chat template ran out of memory"),
            "{}",
            err(&o)
        );
        assert!(o.stdout.is_empty());
    }
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_default()
}

#[test]
fn state_aimed_at_a_file_of_the_output_directory_is_a_usage_error() {
    let h = home();
    let work = tempfile::tempdir().unwrap();
    let d = work.path().join("d");
    let dir_arg = format!("{}/", d.display());
    // A first night fills the directory.
    let st = work.path().join("s.json");
    let o = run(
        Some(h.path()),
        &["export", "--out", &dir_arg, "--state", s(&st)],
        None,
    );
    assert_eq!(code(&o), 0, "{}", err(&o));
    for name in ["train.jsonl", "manifest.json", "README.md", "valid.jsonl"] {
        let target = d.join(name);
        let before = read(&target);
        let o = run(
            Some(h.path()),
            &["export", "--out", &dir_arg, "--state", s(&target)],
            None,
        );
        assert_eq!(code(&o), 2, "{name}: {}", err(&o));
        assert_eq!(read(&target), before, "{name} was replaced");
        // And into a new directory, where nothing exists yet.
        let fresh = work.path().join(format!("new-{name}"));
        let o = run(
            Some(h.path()),
            &[
                "export",
                "--out",
                &format!("{}/", fresh.display()),
                "--state",
                s(&fresh.join(name)),
            ],
            None,
        );
        assert_eq!(code(&o), 2, "{name}: {}", err(&o));
        assert!(!fresh.join(name).exists());
    }
    // One-shot outputs aimed into the job's directory, or at its state.
    for target in [
        d.join("train.jsonl"),
        d.join("manifest.json"),
        d.join("README.md"),
        st.clone(),
    ] {
        let before = read(&target);
        let o = run(Some(h.path()), &["export", "--out", s(&target)], None);
        assert_eq!(code(&o), 2, "{}: {}", target.display(), err(&o));
        assert_eq!(read(&target), before, "{} was replaced", target.display());
    }
    // The job still runs.
    let o = run(
        Some(h.path()),
        &["export", "--out", &dir_arg, "--state", s(&st)],
        None,
    );
    assert_eq!(code(&o), 0, "{}", err(&o));
}

#[test]
fn a_large_readme_of_the_user_is_kept() {
    let h = home();
    let work = tempfile::tempdir().unwrap();
    let d = work.path().join("d");
    std::fs::create_dir(&d).unwrap();
    for (k, size) in [(4 << 20) - 1, 4 << 20, (4 << 20) + 1, 9 << 20]
        .into_iter()
        .enumerate()
    {
        let mine = vec![b'#'; size];
        std::fs::write(d.join("README.md"), &mine).unwrap();
        let o = run(
            Some(h.path()),
            &["export", "--out", &format!("{}/", d.display())],
            None,
        );
        assert_eq!(code(&o), 0, "{size}: {}", err(&o));
        assert!(
            read(&d.join("README.md")) == mine,
            "{size}: the user's README.md was replaced"
        );
        // Said once, when the card is first written beside it.
        assert_eq!(err(&o).contains("README.md"), k == 0, "{size}: {}", err(&o));
        assert!(d.join("DATASET_CARD.md").is_file(), "{size}");
    }
}

#[test]
fn out_to_a_descriptor_writes_into_it_without_a_lock() {
    let h = home();
    for path in ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"] {
        let o = run(Some(h.path()), &["export", "--out", path], None);
        assert_eq!(code(&o), 0, "{path}: {}", err(&o));
        assert!(!common::lines(&o.stdout).is_empty(), "{path}");
    }
    let o = run(Some(h.path()), &["export", "--out", "/dev/stderr"], None);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert!(err(&o).contains("{\"messages\""), "{}", err(&o));
}

#[test]
fn a_one_shot_file_leaves_no_lock_and_creates_no_directory() {
    let h = home();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("x.jsonl");
    let o = run(Some(h.path()), &["export", "--out", s(&out)], None);
    assert_eq!(code(&o), 0, "{}", err(&o));
    common::lines(&read(&out));
    let left: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("x.jsonl")],
        "only the output is left"
    );
    let missing = work.path().join("nonexistent/dir/x.jsonl");
    let o = run(Some(h.path()), &["export", "--out", s(&missing)], None);
    assert_eq!(code(&o), 2, "{}", err(&o));
    assert!(err(&o).contains("does not exist"), "{}", err(&o));
    assert!(
        !work.path().join("nonexistent").exists(),
        "the directory was created"
    );
}

#[test]
fn a_held_lock_names_its_holder_and_since_when() {
    let h = home();
    let work = tempfile::tempdir().unwrap();
    let st = work.path().join("s.json");
    let held = hermes_harvest::lock::RunLock::acquire(&st).unwrap();
    let out = work.path().join("o.jsonl");
    let o = run(
        Some(h.path()),
        &["export", "--state", s(&st), "--out", s(&out)],
        None,
    );
    assert_eq!(code(&o), 5, "{}", err(&o));
    assert!(
        err(&o).contains(&format!("pid {}", std::process::id())),
        "{}",
        err(&o)
    );
    assert!(err(&o).contains("since 20"), "{}", err(&o));
    drop(held);
    let o = run(
        Some(h.path()),
        &["export", "--state", s(&st), "--out", s(&out)],
        None,
    );
    assert_eq!(code(&o), 0, "{}", err(&o));
}

#[test]
fn every_output_aimed_at_an_input_is_a_usage_error() {
    let h = home();
    let work = tempfile::tempdir().unwrap();
    let prompt = work.path().join("prompt.txt");
    std::fs::write(&prompt, "You are terse.\n").unwrap();
    let inputs = [
        "state.db",
        "state.db-wal",
        "response_store.db",
        ".env",
        "config.yaml",
        "SOUL.md",
        "sessions/new.jsonl",
    ];
    for name in inputs {
        let target = h.path().join(name);
        let before = read(&target);
        for flag in ["--out", "--state"] {
            let mut args = vec!["export", flag, s(&target), "--system-prompt", s(&prompt)];
            let other = work.path().join("other.jsonl");
            if flag == "--state" {
                args.extend(["--out", s(&other)]);
            }
            let o = run(Some(h.path()), &args, None);
            assert_eq!(code(&o), 2, "{flag} {name}: {}", err(&o));
            assert_eq!(read(&target), before, "{flag} {name}");
        }
    }
    for flag in ["--out", "--state"] {
        let mut args = vec!["export", flag, s(&prompt), "--system-prompt", s(&prompt)];
        let other = work.path().join("other.jsonl");
        if flag == "--state" {
            args.extend(["--out", s(&other)]);
        }
        let o = run(Some(h.path()), &args, None);
        assert_eq!(code(&o), 2, "{flag} prompt: {}", err(&o));
    }
    let st = work.path().join("s.json");
    let o = run(
        Some(h.path()),
        &["export", "--state", s(&st), "--out", s(&st)],
        None,
    );
    assert_eq!(code(&o), 2, "{}", err(&o));
    let lock = work.path().join("s.json.lock");
    let o = run(
        Some(h.path()),
        &["export", "--state", s(&st), "--out", s(&lock)],
        None,
    );
    assert_eq!(code(&o), 2, "{}", err(&o));
}

#[test]
fn a_dry_run_creates_nothing_in_the_hermes_home() {
    let h = home();
    let list = |dir: &Path| -> Vec<String> {
        walkdir::WalkDir::new(dir)
            .into_iter()
            .map(|e| e.unwrap().path().display().to_string())
            .collect()
    };
    let before = list(h.path());
    assert!(
        !before
            .iter()
            .any(|p| p.ends_with("-wal") || p.ends_with("-shm"))
    );
    let o = run(Some(h.path()), &["export", "--dry-run"], None);
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert!(o.stdout.is_empty());
    assert_eq!(
        list(h.path()),
        before,
        "the dry run left files in HERMES_HOME"
    );
}

#[test]
fn sources_prints_stored_names_with_control_characters_escaped() {
    let h = home();
    let db = rusqlite::Connection::open(h.path().join("state.db")).unwrap();
    db.execute_batch(
        "UPDATE sessions SET source = 'tui' || char(27) || ']0;pwned' || char(7), model = 'm' || char(27) || '[31mred' WHERE rowid = (SELECT min(rowid) FROM sessions);",
    )
    .unwrap();
    drop(db);
    let o = run(Some(h.path()), &["sources"], None);
    assert_eq!(code(&o), 0, "{}", err(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text}"
    );
    assert!(text.contains("\\u{1b}"), "{text}");
    let o = run(Some(h.path()), &["sources", "--json"], None);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v.to_string().contains("pwned"));
    assert!(!String::from_utf8_lossy(&o.stdout).contains('\u{1b}'));
}

/// A session whose one tool call has arguments nested `levels` deep.
fn deep_arguments_session(home: &Path, levels: usize) {
    let deep = format!("{}1{}", "{\"a\":".repeat(levels), "}".repeat(levels));
    let calls = serde_json::json!([{"id": "call_deep", "type": "function", "function": {"name": "todo", "arguments": deep}}]).to_string();
    let db = rusqlite::Connection::open(home.join("state.db")).unwrap();
    db.execute_batch(&format!(
        "INSERT INTO sessions (id, source, started_at) VALUES ('deep-1', 'cli', 1800000000);
         INSERT INTO messages (session_id, role, content, timestamp) VALUES ('deep-1', 'user', 'plan it', 1800000000);
         INSERT INTO messages (session_id, role, content, tool_calls, timestamp) VALUES ('deep-1', 'assistant', '', '{}', 1800000001);
         INSERT INTO messages (session_id, role, content, tool_call_id, tool_name, timestamp) VALUES ('deep-1', 'tool', 'ok', 'call_deep', 'todo', 1800000002);
         INSERT INTO messages (session_id, role, content, timestamp, finish_reason) VALUES ('deep-1', 'assistant', 'done', 1800000003, 'stop');",
        calls.replace('\'', "''")
    ))
    .unwrap();
}

#[test]
fn export_and_validate_agree_on_the_nesting_of_tool_arguments() {
    for (levels, kept) in [(64, true), (65, false), (127, false)] {
        let h = home();
        deep_arguments_session(h.path(), levels);
        let work = tempfile::tempdir().unwrap();
        let out = work.path().join("o.jsonl");
        let o = run(
            Some(h.path()),
            &["export", "--session", "deep-1", "--out", s(&out)],
            None,
        );
        assert_eq!(code(&o), 0, "{levels}: {}", err(&o));
        let written = common::lines(&read(&out));
        assert_eq!(written.len(), usize::from(kept), "{levels}: {}", err(&o));
        // Whatever the export wrote, its own validate accepts.
        let o = run(None, &["validate", s(&out)], None);
        assert_eq!(code(&o), 0, "{levels}: {}", err(&o));
    }
    // A line deeper than the limit, written by hand, is refused.
    let h = home();
    deep_arguments_session(h.path(), 64);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("o.jsonl");
    let o = run(
        Some(h.path()),
        &["export", "--session", "deep-1", "--out", s(&out)],
        None,
    );
    assert_eq!(code(&o), 0, "{}", err(&o));
    let text = String::from_utf8(read(&out)).unwrap();
    let deeper = text.replace("{\"a\":1}", "{\"a\":{\"a\":1}}");
    assert_ne!(deeper, text);
    std::fs::write(&out, deeper).unwrap();
    let o = run(None, &["validate", s(&out)], None);
    assert_eq!(code(&o), 4, "{}", err(&o));
    assert!(
        format!("{}{}", err(&o), String::from_utf8_lossy(&o.stdout)).contains("nest 65 levels"),
        "{}",
        err(&o)
    );
}

#[test]
fn links_to_regular_files_are_followed_as_the_hf_cache_needs() {
    let h = home();
    let tok = tokenizer_copy(h.path());
    let blobs = h.path().join("blobs");
    std::fs::create_dir(&blobs).unwrap();
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ] {
        let blob = blobs.join(format!("blob-{name}"));
        std::fs::rename(tok.join(name), &blob).unwrap();
        std::os::unix::fs::symlink(&blob, tok.join(name)).unwrap();
    }
    let o = run(
        Some(h.path()),
        &["export", "--channel", "tui", "--tokenizer", s(&tok)],
        None,
    );
    assert_eq!(code(&o), 0, "{}", err(&o));
    assert!(!common::lines(&o.stdout).is_empty());
}
