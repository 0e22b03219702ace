//! The export's summary: one line when stderr is not a terminal (cron, a
//! log), a short block on a terminal (a pseudo-terminal here), nothing with
//! `--quiet`; the manifest holds the figures the line leaves out.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::common::{bin, fixture_home, run_in};

/// The summary's lines in `stderr`: from the one that starts it on.
fn summary(stderr: &str) -> Vec<String> {
    let lines: Vec<String> = stderr
        .replace('\r', "")
        .lines()
        .map(str::to_string)
        .collect();
    let at = lines
        .iter()
        .position(|l| l.contains("hermes-harvest: read "))
        .unwrap_or_else(|| panic!("no summary in {stderr}"));
    let first = &lines[at];
    let start = first.find("hermes-harvest: read ").unwrap();
    let mut out = vec![first[start..].to_string()];
    out.extend(
        lines[at + 1..]
            .iter()
            .take_while(|l| l.starts_with("  "))
            .cloned(),
    );
    out
}

/// Runs the binary with stderr on a new pseudo-terminal; returns what the
/// terminal showed.
fn on_terminal(args: &[&str]) -> String {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors it opened into the two ints.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are open and owned by nothing else.
    let (master, slave) = unsafe {
        (
            std::fs::File::from_raw_fd(master),
            OwnedFd::from_raw_fd(slave),
        )
    };
    let mut child = Command::new(bin())
        .args(args)
        .env_remove("HERMES_HOME")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(slave))
        .spawn()
        .expect("run binary");
    // The terminal is read while the run writes (its buffer is small);
    // reading ends with EIO once the child's end is closed.
    let reader = std::thread::spawn(move || {
        let mut master = master;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        seen
    });
    assert_eq!(child.wait().unwrap().code(), Some(0));
    String::from_utf8_lossy(&reader.join().unwrap()).into_owned()
}

fn with_home<'a>(home: &'a Path, args: &[&'a str]) -> Vec<&'a str> {
    let mut full = args.to_vec();
    full.extend(["--hermes-home", home.to_str().unwrap()]);
    full
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn under_cron_the_summary_is_one_short_line_and_quiet_hides_it() {
    let home = fixture_home("hermes-0.13.0");
    let work = tempfile::tempdir().unwrap();
    let out = format!("{}/", work.path().join("data").display());
    let state = work.path().join("state.json");
    let args = ["export", "--out", &out, "--state", state.to_str().unwrap()];
    let run = run_in(home.path(), &args);
    assert_eq!(run.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&run.stderr);
    let lines = summary(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    let line = &lines[0];
    assert!(line.chars().count() < 320, "{} chars: {line}", line.len());
    let m = manifest(&work.path().join("data"));
    let written: u64 = m["counts"]["new_lines"].as_u64().unwrap();
    let channels = channel_counts(&m);
    let wrote = format!("wrote {written} sft lines ({channels})");
    assert!(line.contains(&wrote), "{line}\nwants {wrote}");
    for part in [
        "tokens (estimated)",
        "% trainable",
        "skipped: over_budget=19",
        "redacted: 0",
    ] {
        assert!(line.contains(part), "{part}: {line}");
    }
    let (train, valid) = (
        &m["dataset"]["lines"]["train.jsonl"],
        &m["dataset"]["lines"]["valid.jsonl"],
    );
    assert!(
        line.ends_with(&format!("; dataset: train {train} lines, valid {valid}")),
        "{line}"
    );
    // What the line leaves out is in the manifest.
    assert_eq!(m["counts"]["history"]["summaries"], 7, "{}", m["counts"]);
    assert_eq!(m["tokens"]["definitions_borrowed"], 0);
    // --quiet: not even the line.
    let quiet_home = fixture_home("hermes-0.13.0");
    let quiet = run_in(quiet_home.path(), &["export", "--quiet"]);
    assert_eq!(quiet.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("hermes-harvest: read"));
}

#[test]
fn on_a_terminal_the_summary_is_a_short_block() {
    let home = fixture_home("hermes-0.19.0");
    let work = tempfile::tempdir().unwrap();
    let out = format!("{}/", work.path().join("data").display());
    let seen = on_terminal(&with_home(home.path(), &["export", "--out", &out]));
    let block = summary(&seen);
    let heads: Vec<&str> = block
        .iter()
        .map(|l| l.trim_start().split(':').next().unwrap())
        .collect();
    assert_eq!(
        heads,
        [
            "hermes-harvest",
            "channels",
            "tokens (estimated, at most 2048 a line)",
            "skipped",
            "redacted",
            "history",
            "dataset"
        ],
        "{seen}"
    );
    assert!(
        block[0].starts_with("hermes-harvest: read 10 sessions (state.db=10); wrote 11 sft lines"),
        "{seen}"
    );
    let m = manifest(&work.path().join("data"));
    let channels = channel_counts(&m);
    assert_eq!(block[1], format!("  channels: {channels}"));
    assert!(
        block[2].ends_with("system prompts: soul=11"),
        "{}",
        block[2]
    );
    let h = &m["counts"]["history"];
    assert!(
        block[5].starts_with(&format!(
            "  history: {} summaries and {} compaction copies dropped, {} undone rows left out",
            h["summaries"], h["compaction_copies"], h["undone_rows"]
        )),
        "{}",
        block[5]
    );
    assert!(
        block[6].starts_with("  dataset: train 10 lines, 9 units; valid 1 line, 1 unit"),
        "{}",
        block[6]
    );
    // --quiet on a terminal: no block either.
    let quiet = on_terminal(&with_home(home.path(), &["export", "--quiet"]));
    assert!(!quiet.contains("hermes-harvest: read"), "{quiet}");
}

/// The manifest's lines per channel as the summary gives them: `nexus=3 …`.
fn channel_counts(m: &Value) -> String {
    let counts = m["counts"]["channels"].as_object().unwrap();
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
    parts.join(" ")
}
