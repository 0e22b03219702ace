//! Export on homes built from the real Hermes captures.

use crate::common::*;
use serde_json::Value;

fn nexus_tool_turn(lines: &[Value]) -> bool {
    lines.iter().any(|v| {
        let msgs = v["messages"].as_array().unwrap();
        msgs.windows(3).any(|w| {
            w[0]["role"] == "assistant"
                && w[0]["content"] == ""
                && w[0]["tool_calls"][0]["function"]["arguments"].is_object()
                && w[1]["role"] == "tool"
                && w[1]["tool_call_id"] == w[0]["tool_calls"][0]["id"]
                && w[1]["name"] == w[0]["tool_calls"][0]["function"]["name"]
                && w[2]["role"] == "assistant"
        })
    })
}

#[test]
fn nexus_channel_exports_the_perception_conversation_with_its_tool_call() {
    for version in VERSIONS {
        let home = fixture_home(version);
        // The exact count fits the todo turn (with the stored system prompt
        // and the todo definition) into the default 2048 tokens.
        let (code, lines, stderr) = export(
            home.path(),
            &["--channel", "nexus", "--tokenizer", &tokenizer_dir()],
        );
        assert_eq!(code, 0, "{version}: {stderr}");
        assert!(!lines.is_empty(), "{version}");
        let users = user_texts(&lines);
        assert!(
            users
                .iter()
                .any(|u| u.starts_with("[perception] archon_entering")),
            "{version}: {users:?}"
        );
        assert!(
            nexus_tool_turn(&lines),
            "{version}: no tool call + result in the nexus export"
        );
        // Every sample carries the session's system prompt.
        for v in &lines {
            assert_eq!(v["messages"][0]["role"], "system", "{version}");
        }
        assert!(stderr.contains("nexus="), "{version}: {stderr}");
    }
}

#[test]
fn tui_and_telegram_channels_export_valid_samples() {
    for version in VERSIONS {
        let home = fixture_home(version);
        for channel in ["tui", "telegram"] {
            let (code, lines, stderr) = export(home.path(), &["--channel", channel]);
            assert_eq!(code, 0, "{version} {channel}: {stderr}");
            assert!(
                !lines.is_empty(),
                "{version} {channel}: nothing exported\n{stderr}"
            );
        }
    }
}

#[test]
fn versions_give_the_same_shape_of_output() {
    let shape = |version: &str| -> Vec<Vec<String>> {
        let home = fixture_home(version);
        let (_, lines, _) = export(
            home.path(),
            &[
                "--channel",
                "nexus",
                "--session",
                "nexus-world-0001",
                "--max-tokens",
                "8192",
            ],
        );
        lines
            .iter()
            .map(|v| {
                v["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| {
                        let mut keys: Vec<String> =
                            m.as_object().unwrap().keys().cloned().collect();
                        keys.sort();
                        format!("{}:{}", m["role"].as_str().unwrap(), keys.join(","))
                    })
                    .collect()
            })
            .collect()
    };
    let a = shape(VERSIONS[0]);
    let b = shape(VERSIONS[1]);
    assert!(!a.is_empty());
    assert_eq!(a, b);
}

#[test]
fn sessions_in_the_db_and_in_session_files_are_exported_once() {
    for version in VERSIONS {
        let home = fixture_home(version);
        let snapshots = std::fs::read_dir(home.path().join("sessions"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("session_")
            })
            .count();
        assert!(snapshots > 0, "{version}: the capture has session files");
        // The chronicle turns hold long replies: a budget that fits them.
        let (_, lines, _) = export(
            home.path(),
            &["--system-prompt", "none", "--max-tokens", "16384"],
        );
        let users = user_texts(&lines);
        let mut sorted = users.clone();
        sorted.sort();
        let before = sorted.len();
        sorted.dedup();
        // Repeated user texts exist only where the capture repeated them on purpose
        // (each compaction scenario asks the same chronicle questions in two sessions).
        let dupes = before - sorted.len();
        assert!(
            dupes <= 16,
            "{version}: {dupes} repeated user turns: {users:#?}"
        );
        assert_eq!(
            users
                .iter()
                .filter(|u| u.starts_with(
                    "[perception] archon_entering: Archon 'Ezra' entered the Nexus at (12"
                ))
                .count(),
            1,
            "{version}"
        );
    }
}

#[test]
fn compaction_is_undone_every_original_turn_once_and_no_summary() {
    for version in VERSIONS {
        let home = fixture_home(version);
        let out = run_in(
            home.path(),
            &["export", "--system-prompt", "none", "--max-tokens", "16384"],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("[CONTEXT COMPACTION"), "{version}");
        assert!(!text.contains("[CONTEXT SUMMARY]"), "{version}");
        let lines = lines(&out.stdout);
        let users = user_texts(&lines);
        for part in 1..=8 {
            for channel in ["api", "telegram"] {
                let needle =
                    format!("chronicle part {part}: tell the long history of the Nexus ({channel}");
                let n = users.iter().filter(|u| u.contains(&needle)).count();
                assert_eq!(n, 1, "{version}: {needle:?} exported {n} times");
            }
        }
        assert!(
            users
                .iter()
                .filter(|u| u.starts_with("After the compaction"))
                .count()
                >= 2,
            "{version}: the turns after compaction are exported"
        );
    }
}

#[test]
fn the_stores_are_left_byte_identical() {
    for version in VERSIONS {
        let home = fixture_home(version);
        let before = snapshot_files(home.path());
        let out = run_in(home.path(), &["export", "--format", "dpo"]);
        assert!(out.status.success());
        let out = run_in(home.path(), &["export"]);
        assert!(out.status.success());
        let out = run_in(home.path(), &["sources"]);
        assert!(out.status.success());
        // A read-only reader of a WAL store may leave SQLite's empty -shm and
        // -wal side files behind (as any SQLite reader does); the stores
        // themselves stay byte-identical and nothing is written to the WAL.
        let after: Vec<_> = snapshot_files(home.path())
            .into_iter()
            .filter(|(p, len, _)| {
                let name = p.to_string_lossy();
                !(name.ends_with("-shm") || (name.ends_with("-wal") && *len == 0))
            })
            .collect();
        assert_eq!(after, before, "{version}");
    }
}

#[test]
fn full_exports_match_their_snapshots() {
    for version in VERSIONS {
        let home = fixture_home(version);
        let (code, sft, _) = export(home.path(), &[]);
        assert_eq!(code, 0);
        insta::assert_snapshot!(format!("{version}-sft"), render(&sft));
        let (code, dpo, _) = export(home.path(), &["--format", "dpo"]);
        assert_eq!(code, 0);
        insta::assert_snapshot!(format!("{version}-dpo"), render(&dpo));
        // Counted exactly with the model's tokenizer, with the persona
        // prompt: the tool turns fit the default budget.
        let exact = ["--tokenizer", &tokenizer_dir(), "--system-prompt", "soul"];
        let (code, sft, _) = export(home.path(), &exact);
        assert_eq!(code, 0);
        insta::assert_snapshot!(format!("{version}-sft-exact-soul"), render(&sft));
        let mut dpo_args = exact.to_vec();
        dpo_args.extend(["--format", "dpo"]);
        let (code, dpo, _) = export(home.path(), &dpo_args);
        assert_eq!(code, 0);
        insta::assert_snapshot!(format!("{version}-dpo-exact-soul"), render(&dpo));
    }
}

#[test]
fn output_is_deterministic() {
    let home = fixture_home(VERSIONS[0]);
    let a = run_in(home.path(), &["export"]);
    let b = run_in(home.path(), &["export"]);
    assert_eq!(a.stdout, b.stdout);
    assert!(!a.stdout.is_empty());
}

#[test]
fn a_corrupt_file_is_named_skipped_and_the_rest_exported() {
    let home = fixture_home(VERSIONS[0]);
    let sessions = home.path().join("sessions");
    // A snapshot of a session the DB does not have, cut off mid-file.
    std::fs::write(
        sessions.join("session_lost-0001.json"),
        b"{\"session_id\": \"lost-0001\", \"messages\": [{\"role\": \"us",
    )
    .unwrap();
    // A legacy transcript with one truncated line between good ones.
    std::fs::write(
        sessions.join("legacy-0002.jsonl"),
        "{\"role\":\"session_meta\",\"platform\":\"telegram\"}\n{\"role\":\"user\",\"content\":\"old question\",\"timestamp\":\"2026-03-01T10:00:00\"}\n{\"role\":\"assistant\",\"conte\n{\"role\":\"assistant\",\"content\":\"old answer\",\"timestamp\":\"2026-03-01T10:00:05\"}\n",
    )
    .unwrap();
    let (code, lines, stderr) = export(home.path(), &[]);
    assert_eq!(code, 3, "exit code 'partial': {stderr}");
    assert!(stderr.contains("session_lost-0001.json"), "{stderr}");
    assert!(stderr.contains("legacy-0002.jsonl:3"), "{stderr}");
    let users = user_texts(&lines);
    assert!(
        users.iter().any(|u| u == "old question"),
        "the good lines of the transcript are used"
    );
    assert!(
        users.iter().any(|u| u.starts_with("[perception]")),
        "the rest is exported"
    );

    let strict = run_in(home.path(), &["export", "--strict"]);
    assert_eq!(strict.status.code(), Some(1));
}

#[test]
fn a_newer_schema_still_exports_what_it_understands() {
    let home = fixture_home(VERSIONS[0]);
    let db = rusqlite::Connection::open(home.path().join("state.db")).unwrap();
    db.execute_batch(
        "ALTER TABLE messages ADD COLUMN sentiment_vector BLOB;
         ALTER TABLE sessions ADD COLUMN galaxy TEXT;
         CREATE TABLE hyperlanes (id INTEGER PRIMARY KEY, note TEXT);
         UPDATE schema_version SET version = 32;",
    )
    .unwrap();
    drop(db);
    let (code, lines, stderr) =
        export(home.path(), &["--channel", "nexus", "--max-tokens", "8192"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("schema v32 is newer"), "{stderr}");
    assert!(stderr.contains("state.db"), "{stderr}");
    assert!(nexus_tool_turn(&lines));
}

#[test]
fn a_file_that_is_not_a_store_gets_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("state.db"), "just some text, not SQLite\n").unwrap();
    let out = run_in(dir.path(), &["export"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("state.db") && stderr.contains("not an SQLite database"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    let empty = tempfile::tempdir().unwrap();
    let out = run_in(empty.path(), &["export"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no Hermes stores"));

    let out = run(&["export", "--hermes-home", "/nonexistent/hermes"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn sources_lists_stores_schema_and_channels() {
    let home = fixture_home(VERSIONS[0]);
    let out = run_in(home.path(), &["sources", "--json"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state_db"]["schema_version"], 22);
    assert!(
        v["state_db"]["channels"]["nexus"]["sessions"]
            .as_u64()
            .unwrap()
            >= 2
    );
    assert!(
        v["state_db"]["channels"]["telegram"]["sessions"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert!(v["response_store"]["responses"].as_u64().unwrap() >= 1);
    let text = run_in(home.path(), &["sources"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("schema v22"), "{text}");
    let old = fixture_home(VERSIONS[1]);
    let out = run_in(old.path(), &["sources", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state_db"]["schema_version"], 11);
}

#[test]
fn system_prompt_policy_and_reasoning() {
    let home = fixture_home(VERSIONS[0]);
    let (_, lines, _) = export(
        home.path(),
        &["--channel", "nexus", "--system-prompt", "none"],
    );
    assert!(lines.iter().all(|v| v["messages"][0]["role"] == "user"));
    let file = home.path().join("timmy.txt");
    std::fs::write(&file, "You are Timmy.").unwrap();
    let (_, lines, _) = export(
        home.path(),
        &[
            "--channel",
            "nexus",
            "--system-prompt",
            file.to_str().unwrap(),
        ],
    );
    assert!(
        lines
            .iter()
            .all(|v| v["messages"][0]["content"] == "You are Timmy.")
    );
    let (_, lines, _) = export(home.path(), &["--channel", "nexus"]);
    assert!(
        !lines
            .iter()
            .any(|v| v.to_string().contains("reasoning_content"))
    );
    let (_, lines, _) = export(home.path(), &["--channel", "nexus", "--include-reasoning"]);
    assert!(
        lines
            .iter()
            .any(|v| v.to_string().contains("reasoning_content"))
    );
    // Responses instructions join Hermes's prompt: after it, a blank line
    // between them.
    let (_, lines, _) = export(home.path(), &["--source", "api_server", "--no-redact"]);
    let instructions = "\n\nYou are Timmy, keeper of the Nexus gate. Answer in one sentence.";
    let joined = lines
        .iter()
        .filter(|v| v["messages"][0]["role"] == "system")
        .filter_map(|v| v["messages"][0]["content"].as_str())
        .filter(|s| s.contains(instructions) && !s.starts_with(instructions.trim_start()))
        .count();
    assert!(joined >= 1, "no sample joins both prompts: {lines:#?}");
}

#[test]
fn openai_target_writes_string_arguments() {
    let home = fixture_home(VERSIONS[0]);
    let (_, lines, _) = export(home.path(), &["--target", "openai", "--max-tokens", "8192"]);
    let calls: Vec<&Value> = lines
        .iter()
        .flat_map(|v| v["messages"].as_array().unwrap())
        .filter(|m| m.get("tool_calls").is_some())
        .collect();
    assert!(!calls.is_empty());
    for m in calls {
        assert!(m["content"].is_null());
        let args = m["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .expect("string arguments");
        assert!(serde_json::from_str::<Value>(args).unwrap().is_object());
    }
}

#[test]
fn long_sessions_are_cut_within_the_budget() {
    let home = fixture_home(VERSIONS[0]);
    let (_, whole, _) = export(
        home.path(),
        &["--session", "nexus-world-0001", "--system-prompt", "none"],
    );
    assert_eq!(whole.len(), 1, "the whole session fits the default budget");
    let small = [
        "--session",
        "nexus-world-0001",
        "--system-prompt",
        "none",
        "--tools",
        "none",
        "--max-tokens",
        "350",
    ];
    let (_, lines, stderr) = export(home.path(), &small);
    assert!(lines.len() >= 3, "cut into several samples: {stderr}");
    assert!(!stderr.contains("over_budget"), "{stderr}");
    let mut users = 0;
    let mut counter = hermes_harvest::tokens::Counter::new(None).unwrap();
    for v in &lines {
        let msgs = v["messages"].as_array().unwrap();
        assert_eq!(msgs[0]["role"], "user", "each sample starts at a user turn");
        assert!(counter.count_line(v).unwrap().total <= 350);
        users += msgs.iter().filter(|m| m["role"] == "user").count();
    }
    let whole_users = whole[0]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .count();
    assert_eq!(users, whole_users, "no turn lost or repeated by the cut");
}

#[test]
fn time_and_turn_filters() {
    let home = fixture_home(VERSIONS[0]);
    let (_, all, _) = export(home.path(), &[]);
    let (_, none, stderr) = export(home.path(), &["--since", "2099-01-01"]);
    assert!(none.is_empty(), "{stderr}");
    let (_, until, _) = export(home.path(), &["--until", "2000-01-01T00:00:00Z"]);
    assert!(until.is_empty());
    let (_, recent, _) = export(home.path(), &["--since", "1970-01-02"]);
    assert_eq!(recent.len(), all.len());
    let (_, many, _) = export(home.path(), &["--min-turns", "4"]);
    assert!(many.len() < all.len());
    let bad = run_in(home.path(), &["export", "--since", "whenever"]);
    assert_eq!(bad.status.code(), Some(1));
}
