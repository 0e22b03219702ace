//! `--threads`: the worker pool on (`-j 4`) writes the same bytes as one
//! thread (`-j 1`), for every output (stdout, a directory with its state),
//! both with the other stores (whose copies only the sink can recognise)
//! and with state.db alone (where workers format sessions ahead, which the
//! cache-stats line counts).

use std::path::Path;

use crate::common::{export, fixture_home, lines, run_in, tokenizer_dir};

/// The homes: every fixture capture as captured, and the two largest with
/// state.db alone.
fn homes() -> Vec<(String, tempfile::TempDir)> {
    let mut out = Vec::new();
    for name in [
        "hermes-0.13.0",
        "hermes-0.19.0",
        "hermes-0.20.6.post1",
        "hermes-0.22.2.post1",
    ] {
        out.push((name.to_string(), fixture_home(name)));
    }
    for name in ["hermes-0.19.0", "hermes-0.22.2.post1"] {
        let home = fixture_home(name);
        std::fs::remove_file(home.path().join("response_store.db")).expect("response store");
        std::fs::remove_dir_all(home.path().join("sessions")).expect("sessions dir");
        out.push((format!("{name} (state.db alone)"), home));
    }
    out
}

/// Stdout, stderr and the sessions formatted ahead (taken, formatted
/// again) of one export with `threads`.
fn stdout_export(home: &Path, flags: &[&str], threads: &str) -> (Vec<u8>, String, (u64, u64)) {
    let mut args = vec!["export", "-j", threads];
    args.extend_from_slice(flags);
    let out = std::process::Command::new(crate::common::bin())
        .args(&args)
        .arg("--hermes-home")
        .arg(home)
        .env("HERMES_HARVEST_CACHE_STATS", "1")
        .env_remove("HERMES_HOME")
        .output()
        .expect("run binary");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    lines(&out.stdout);
    (out.stdout, without_stats(&stderr), ahead_figures(&stderr))
}

/// Stderr without the cache-stats line (its hit rates depend on how the
/// sessions were spread over the workers).
fn without_stats(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.contains("cache stats:"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ahead_figures(stderr: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.contains("sessions formatted ahead:"))
        .expect("a cache-stats line");
    let tail = line
        .split("sessions formatted ahead: ")
        .nth(1)
        .expect("figures");
    let n: Vec<u64> = tail
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("a number"))
        .collect();
    (n[0], n[1])
}

#[test]
fn many_threads_write_what_one_thread_writes_to_stdout() {
    let tok = tokenizer_dir();
    let flag_sets: Vec<Vec<&str>> = vec![
        vec![],
        vec!["--tokenizer", &tok],
        vec!["--tokenizer", &tok, "--max-tokens", "300"],
        vec!["--format", "dpo"],
        vec!["--format", "dpo", "--tokenizer", &tok],
        vec!["--format", "dpo", "--dpo-style", "flat"],
        vec!["--tools", "all", "--tokenizer", &tok],
    ];
    let (mut written, mut taken) = (0, 0);
    for (name, home) in homes() {
        for flags in &flag_sets {
            let (one, one_err, one_ahead) = stdout_export(home.path(), flags, "1");
            let (four, four_err, four_ahead) = stdout_export(home.path(), flags, "4");
            assert!(one == four, "{name} {flags:?}: -j 4 wrote other bytes");
            assert_eq!(one_err, four_err, "{name} {flags:?}: the summaries differ");
            assert_eq!(one_ahead, (0, 0), "one thread formats nothing ahead");
            if name.contains("alone") {
                // No curation changed a selection here: every session
                // formatted ahead was taken.
                assert_eq!(four_ahead.1, 0, "{name} {flags:?}: formatted again");
            }
            written += one.len();
            taken += four_ahead.0;
        }
    }
    assert!(written > 0, "the exports wrote nothing");
    assert!(taken > 0, "no session was formatted ahead");
}

/// One directory export with a state, and the night after with nothing
/// new: the files' bytes, and the manifest but for its run's own fields.
fn dir_export(home: &Path, threads: &str, tok: &str) -> Vec<(String, Vec<u8>)> {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("out");
    let state = work.path().join("state.json");
    let dir_arg = format!("{}/", dir.display());
    let state_arg = state.display().to_string();
    let args = [
        "export",
        "-j",
        threads,
        "--tokenizer",
        tok,
        "--out",
        &dir_arg,
        "--state",
        &state_arg,
        "--valid-fraction",
        "0.3",
    ];
    let mut files = Vec::new();
    for night in 0..2 {
        let out = run_in(home, &args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for name in ["train.jsonl", "valid.jsonl"] {
            let bytes = std::fs::read(dir.join(name)).unwrap_or_default();
            lines(&bytes);
            files.push((format!("night {night}: {name}"), bytes));
        }
        let text = std::fs::read_to_string(dir.join("manifest.json")).expect("manifest");
        let mut m: serde_json::Value = serde_json::from_str(&text).expect("manifest JSON");
        // The command line (it names -j) and the run's time are its own.
        for key in ["flags", "created"] {
            m.as_object_mut().expect("an object").remove(key);
        }
        files.push((
            format!("night {night}: manifest"),
            m.to_string().into_bytes(),
        ));
    }
    files
}

#[test]
fn many_threads_write_what_one_thread_writes_to_a_directory_with_state() {
    let tok = tokenizer_dir();
    for (name, home) in homes() {
        let one = dir_export(home.path(), "1", &tok);
        let four = dir_export(home.path(), "4", &tok);
        for ((file, a), (_, b)) in one.iter().zip(&four) {
            assert!(a == b, "{name}: {file} differs with -j 4");
        }
        assert!(
            one[0].1.len() + one[1].1.len() > 0,
            "{name}: nothing written"
        );
    }
}

#[test]
fn threads_outside_1_to_256_are_a_usage_error() {
    let home = fixture_home("hermes-0.19.0");
    for bad in ["0", "257", "two"] {
        let (code, out, stderr) = export(home.path(), &["-j", bad]);
        assert_eq!(code, 2, "{bad}: {stderr}");
        assert!(out.is_empty());
        assert!(stderr.contains("--threads"), "{stderr}");
    }
}
