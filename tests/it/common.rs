#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use hermes_harvest::validate::{Schemas, Shape};
use serde_json::Value;

pub const VERSIONS: [&str; 2] = ["hermes-0.19.0", "hermes-0.13.0"];

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hermes-harvest"))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The committed tokenizer directory (ChatML-style template with tools).
pub fn tokenizer_dir() -> String {
    repo()
        .join("fixtures/tokenizer/chatml")
        .to_str()
        .expect("utf-8 path")
        .to_string()
}

/// Builds a Hermes home from `fixtures/<name>/home` in a fresh temp dir.
pub fn fixture_home(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    hermes_harvest::fixture::materialize(
        &repo().join("fixtures").join(name).join("home"),
        dir.path(),
    )
    .expect("materialize fixture");
    dir
}

pub fn run(args: &[&str]) -> Output {
    std::process::Command::new(bin())
        .args(args)
        .env_remove("HERMES_HOME")
        .output()
        .expect("run binary")
}

/// Runs the binary with `--hermes-home HOME` appended.
pub fn run_in(home: &Path, args: &[&str]) -> Output {
    let mut full: Vec<&str> = args.to_vec();
    full.push("--hermes-home");
    full.push(home.to_str().expect("utf-8 path"));
    run(&full)
}

/// `validate DIR/ --state STATE` passes (its output tells why not).
pub fn validates_with_state(dir: &str, state: &Path) {
    let v = run(&[
        "validate",
        dir,
        "--state",
        state.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
}

/// [`run_in`], asserting that the run succeeded (its stderr tells why not).
pub fn run_ok(home: &Path, args: &[&str]) -> Output {
    let out = run_in(home, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn schemas() -> &'static Schemas {
    static S: OnceLock<Schemas> = OnceLock::new();
    S.get_or_init(|| Schemas::load().expect("schemas"))
}

/// Parses JSONL output and validates every line against its schema and
/// the semantic rules; panics with the line on any problem.
pub fn lines(bytes: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(bytes).expect("utf-8 output");
    if text.is_empty() {
        return Vec::new();
    }
    assert!(text.ends_with('\n'), "output must end with a newline");
    let mut shape = None;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            assert!(!l.trim().is_empty(), "blank line {}", i + 1);
            let v: Value = serde_json::from_str(l).expect("JSON line");
            let s = Shape::of(&v).expect("known shape");
            assert_eq!(*shape.get_or_insert(s), s, "one shape per file");
            let problems = schemas().check(&v, s);
            assert!(problems.is_empty(), "line {}: {problems:?}\n{l}", i + 1);
            v
        })
        .collect()
}

/// Exports and returns (exit code, validated lines, stderr).
pub fn export(home: &Path, args: &[&str]) -> (i32, Vec<Value>, String) {
    let mut full = vec!["export"];
    full.extend_from_slice(args);
    let out = run_in(home, &full);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code().unwrap_or(-1);
    (code, lines(&out.stdout), stderr)
}

fn short(s: &str) -> String {
    let s = s.replace('\n', " ");
    if s.chars().count() > 90 {
        format!("{}…", s.chars().take(90).collect::<String>())
    } else {
        s
    }
}

fn render_msgs(msgs: &[Value], out: &mut String) {
    for m in msgs {
        let role = m["role"].as_str().unwrap_or("?");
        let content = m["content"].as_str().unwrap_or("");
        let mut line = if role == "system" {
            format!("  system: <{} chars>", content.len())
        } else if role == "tool" {
            format!(
                "  tool[{}]: {}",
                m["name"].as_str().unwrap_or("?"),
                short(content)
            )
        } else {
            format!("  {role}: {}", short(content))
        };
        for c in m["tool_calls"].as_array().into_iter().flatten() {
            line += &format!(
                " <call {}({})>",
                c["function"]["name"].as_str().unwrap_or("?"),
                short(&c["function"]["arguments"].to_string())
            );
        }
        out.push_str(&line);
        out.push('\n');
    }
}

/// A compact, reviewable rendering of exported lines for snapshots.
pub fn render(lines: &[Value]) -> String {
    let mut out = String::new();
    for (i, v) in lines.iter().enumerate() {
        out += &format!("#{}", i + 1);
        if let Some(t) = v["tools"].as_array() {
            let names: Vec<&str> = t
                .iter()
                .map(|d| d["function"]["name"].as_str().unwrap_or("?"))
                .collect();
            out += &format!(" tools=[{}]", names.join(","));
        }
        out.push('\n');
        if let Some(msgs) = v["messages"].as_array() {
            render_msgs(msgs, &mut out);
        } else if let Some(p) = v["prompt"].as_array() {
            render_msgs(p, &mut out);
            for side in ["chosen", "rejected"] {
                out += &format!(" {side}:\n");
                render_msgs(v[side].as_array().expect("side"), &mut out);
            }
        } else {
            for k in ["system", "prompt", "chosen", "rejected"] {
                if let Some(s) = v[k].as_str() {
                    out += &format!("  {k}: {}\n", short(s));
                }
            }
        }
    }
    out
}

/// Every user text of every SFT line, in order.
pub fn user_texts(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .flat_map(|v| v["messages"].as_array().cloned().unwrap_or_default())
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Every file under `dir` with its length and hash, for "stores untouched".
pub fn snapshot_files(dir: &Path) -> Vec<(PathBuf, usize, u64)> {
    walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let bytes = std::fs::read(e.path()).expect("read");
            let text = bytes.iter().map(|b| *b as char).collect::<String>();
            (
                e.path().to_path_buf(),
                bytes.len(),
                hermes_harvest::hash::stable_hash(&text),
            )
        })
        .collect()
}

/// The 0.19 capture with its state.db emptied (FTS triggers dropped, no
/// session or message left): a store a test fills by hand.
pub fn emptied_state_db() -> tempfile::TempDir {
    let home = fixture_home(VERSIONS[0]);
    let db = rusqlite::Connection::open(home.path().join("state.db")).unwrap();
    drop_fts_triggers(&db);
    db.execute_batch("DELETE FROM messages; DELETE FROM sessions;")
        .unwrap();
    home
}

/// Drops the FTS sync triggers of a scratch store so tests can insert many
/// rows quickly.
pub fn drop_fts_triggers(db: &rusqlite::Connection) {
    let triggers: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    for t in triggers {
        db.execute_batch(&format!("DROP TRIGGER \"{t}\"")).unwrap();
    }
}

/// Every assistant turn of every line, sorted: the training targets (with
/// `--sft-context 0` each line holds only the turns it trains on).
pub fn targets(lines: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = lines
        .iter()
        .flat_map(|l| l["messages"].as_array().unwrap().clone())
        .filter(|m| m["role"] == "assistant")
        .map(|m| format!("{}|{}", m["content"], m["tool_calls"]))
        .collect();
    out.sort();
    out
}
