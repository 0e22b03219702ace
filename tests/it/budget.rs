//! Samples a trainer can learn from: every sample fits the budget as the
//! trainer renders it, tool rows carry their definitions, long tool
//! results are shortened, what cannot fit is counted.

use std::collections::BTreeSet;
use std::path::Path;

use hermes_harvest::tokens::Counter;
use serde_json::Value;

use crate::common::*;

/// Export flags: the Nexus session, counted exactly, with the persona
/// system prompt (room for its turns in the default budget).
fn nexus_exact_soul(tokenizer: &str) -> [&str; 6] {
    [
        "--session",
        "nexus-world-0001",
        "--tokenizer",
        tokenizer,
        "--system-prompt",
        "soul",
    ]
}

fn exact() -> Counter {
    Counter::new(Some(Path::new(&tokenizer_dir()))).unwrap()
}

fn names(v: &Value, key: &str) -> BTreeSet<String> {
    v[key]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| m["tool_calls"].as_array().cloned().unwrap_or_default())
        .map(|c| c["function"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn tool_names(v: &Value) -> BTreeSet<String> {
    v["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t["function"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_sample_fits_the_default_budget_as_the_trainer_renders_it() {
    let mut counter = exact();
    for version in VERSIONS {
        let home = fixture_home(version);
        for format in ["sft", "dpo"] {
            for system in ["session", "soul"] {
                let (code, lines, stderr) = export(
                    home.path(),
                    &[
                        "--format",
                        format,
                        "--system-prompt",
                        system,
                        "--tokenizer",
                        &tokenizer_dir(),
                    ],
                );
                assert_eq!(code, 0, "{stderr}");
                assert!(stderr.contains(" tokens (exact), "), "{stderr}");
                for v in &lines {
                    let c = counter.count_line(v).unwrap();
                    assert!(c.total <= 2048, "{version} {format} {system}: {c:?}");
                    assert!(c.trainable > 0, "{version} {format} {system}: {v}");
                }
                if system == "soul" {
                    assert!(!lines.is_empty(), "{version} {format}: {stderr}");
                }
            }
        }
    }
}

#[test]
fn validate_flags_rows_over_a_budget() {
    let home = fixture_home(VERSIONS[0]);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("sft.jsonl");
    let out = run_in(
        home.path(),
        &[
            "export",
            "--tokenizer",
            &tokenizer_dir(),
            "--out",
            file.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let check = |n: &str| {
        run(&[
            "validate",
            file.to_str().unwrap(),
            "--max-tokens",
            n,
            "--tokenizer",
            &tokenizer_dir(),
        ])
    };
    let ok = check("2048");
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let tight = check("1000");
    assert_eq!(tight.status.code(), Some(4));
    let report = String::from_utf8_lossy(&tight.stdout);
    assert!(report.contains("over the budget of 1000"), "{report}");
    // Without a tokenizer, the estimate counts (and is more cautious).
    // Without a tokenizer, the estimate counts: every line is far below a
    // large budget and over the smallest one.
    let est = |n: &str| run(&["validate", file.to_str().unwrap(), "--max-tokens", n]);
    assert_eq!(est("100000").status.code(), Some(0));
    let small = est("64");
    assert_eq!(small.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&small.stdout).contains("over the budget of 64"));
}

#[test]
fn tool_rows_carry_their_definitions_in_sft_and_dpo() {
    for version in VERSIONS {
        let home = fixture_home(version);
        let base = ["--tokenizer", &tokenizer_dir(), "--system-prompt", "soul"];
        let (_, sft, _) = export(home.path(), &base);
        let mut dpo_args = base.to_vec();
        dpo_args.extend(["--format", "dpo"]);
        let (_, dpo, _) = export(home.path(), &dpo_args);
        let mut calling = 0;
        for v in &sft {
            let called = names(v, "messages");
            calling += usize::from(!called.is_empty());
            assert!(called.is_subset(&tool_names(v)), "{version}: {v}");
        }
        for v in &dpo {
            let mut called = names(v, "prompt");
            called.extend(names(v, "chosen"));
            calling += usize::from(!called.is_empty());
            assert!(called.is_subset(&tool_names(v)), "{version}: {v}");
        }
        assert!(calling > 0, "{version}: no row calls a tool");
        // `all` carries every offered tool; `none` carries none.
        let mut all = base.to_vec();
        all.extend(["--tools", "all", "--max-tokens", "100000"]);
        let (_, lines, _) = export(home.path(), &all);
        assert!(lines.iter().any(|v| tool_names(v).len() >= 16), "{version}");
        let mut none = base.to_vec();
        none.extend(["--tools", "none"]);
        let (_, lines, _) = export(home.path(), &none);
        assert!(lines.iter().all(|v| v.get("tools").is_none()), "{version}");
    }
}

#[test]
fn a_session_without_definitions_borrows_them_from_the_home() {
    let home = fixture_home(VERSIONS[0]);
    // nexus-world-0001 calls todo; without its snapshot the definition
    // comes from another session's.
    std::fs::remove_file(home.path().join("sessions/session_nexus-world-0001.json")).unwrap();
    let tok = tokenizer_dir();
    let args = nexus_exact_soul(&tok);
    let (code, lines, stderr) = export(home.path(), &args);
    assert_eq!(code, 0, "{stderr}");
    let calling: Vec<&Value> = lines
        .iter()
        .filter(|v| !names(v, "messages").is_empty())
        .collect();
    assert!(!calling.is_empty(), "{stderr}");
    for v in calling {
        assert!(tool_names(v).contains("todo"));
    }
    // With no snapshot anywhere, the row is written and the gap counted.
    std::fs::remove_dir_all(home.path().join("sessions")).unwrap();
    let (code, _, stderr) = export(home.path(), &args);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("without a called tool's definition"),
        "{stderr}"
    );
}

#[test]
fn the_two_template_layouts_give_byte_identical_output() {
    let home = fixture_home(VERSIONS[0]);
    let layouts = [
        tokenizer_dir(),
        repo()
            .join("fixtures/tokenizer/chatml-config")
            .display()
            .to_string(),
        repo()
            .join("fixtures/tokenizer/chatml/tokenizer.json")
            .display()
            .to_string(),
    ];
    for format in ["sft", "dpo"] {
        let outputs: Vec<Vec<u8>> = layouts
            .iter()
            .map(|t| {
                let out = run_in(
                    home.path(),
                    &["export", "--format", format, "--tokenizer", t],
                );
                assert_eq!(out.status.code(), Some(0));
                out.stdout
            })
            .collect();
        assert!(!outputs[0].is_empty());
        assert_eq!(outputs[0], outputs[1], "{format}: chatml vs chatml-config");
        assert_eq!(
            outputs[0], outputs[2],
            "{format}: directory vs tokenizer.json"
        );
    }
}

#[test]
fn over_budget_is_counted_never_silent() {
    let home = fixture_home(VERSIONS[0]);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("out");
    let arg = format!("{}/", dir.display());
    // A replacement prompt over 1,000 tokens (a FILE has no shorter
    // fallback, unlike the stored prompt).
    let prompt = work.path().join("long-prompt.txt");
    std::fs::write(&prompt, "You are Timmy, who speaks at length. ".repeat(300)).unwrap();
    let out = run_in(
        home.path(),
        &[
            "export",
            "--tokenizer",
            &tokenizer_dir(),
            "--max-tokens",
            "1000",
            "--system-prompt",
            prompt.to_str().unwrap(),
            "-q",
            "--out",
            &arg,
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let skipped = manifest["counts"]["skipped"]["over_budget"]
        .as_u64()
        .unwrap();
    assert!(skipped > 0, "{stderr}");
    // Under --quiet, one warning line names what was dropped.
    let warnings: Vec<&str> = stderr.lines().collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains(&format!("dropped {skipped} selected")),
        "{stderr}"
    );
    assert!(warnings[0].contains("--max-tokens 1000"), "{stderr}");
    let per_channel: u64 = manifest["tokens"]["channels"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["over_budget"].as_u64().unwrap())
        .sum();
    assert_eq!(per_channel, skipped);
    assert_eq!(manifest["tokens"]["trainer_max_length_at_least"], 1000);
    assert_eq!(manifest["tokens"]["exact"], true);
    // No line: no 0-byte train.jsonl (loaders fail on one).
    assert!(!dir.join("train.jsonl").exists());
}

#[test]
fn long_tool_results_are_shortened_head_and_tail_to_fit() {
    let home = fixture_home(VERSIONS[0]);
    let db = rusqlite::Connection::open(home.path().join("state.db")).unwrap();
    drop_fts_triggers(&db);
    let long = format!("HEAD-OF-RESULT {} TAIL-OF-RESULT", "x".repeat(30_000));
    let n = db
        .execute(
            "UPDATE messages SET content = ?1 WHERE role = 'tool' AND session_id = 'nexus-world-0001'",
            [&long],
        )
        .unwrap();
    assert!(n > 0);
    drop(db);
    let tok = tokenizer_dir();
    let (code, lines, stderr) = export(home.path(), &nexus_exact_soul(&tok));
    assert_eq!(code, 0, "{stderr}");
    let tool: Vec<String> = lines
        .iter()
        .flat_map(|v| v["messages"].as_array().unwrap().clone())
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap().to_string())
        .collect();
    assert!(!tool.is_empty(), "the tool turn is kept: {stderr}");
    for t in &tool {
        assert!(t.starts_with("HEAD-OF-RESULT") && t.ends_with("TAIL-OF-RESULT"));
        assert!(t.contains("bytes cut by hermes-harvest to fit the token budget"));
        assert!(t.len() < long.len());
    }
    let mut counter = exact();
    for v in &lines {
        assert!(counter.count_line(v).unwrap().total <= 2048);
    }
}

#[test]
fn system_prompt_policies() {
    let home = fixture_home(VERSIONS[0]);
    let soul = std::fs::read_to_string(home.path().join("SOUL.md")).unwrap();
    let first_system = |args: &[&str]| -> Option<String> {
        let (code, lines, stderr) = export(home.path(), args);
        assert_eq!(code, 0, "{stderr}");
        let m = &lines[0]["messages"][0];
        (m["role"] == "system").then(|| m["content"].as_str().unwrap().to_string())
    };
    let session = first_system(&["--max-tokens", "8192", "--system-prompt", "session"]).unwrap();
    assert!(session.len() > 5000);
    assert_eq!(
        first_system(&["--system-prompt", "soul"]).unwrap(),
        soul.trim()
    );
    assert_eq!(
        first_system(&[]).unwrap(),
        soul.trim(),
        "soul is the default"
    );
    assert_eq!(first_system(&["--system-prompt", "none"]), None);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("timmy.txt");
    std::fs::write(&file, "You are Timmy.\n\n").unwrap();
    assert_eq!(
        first_system(&["--system-prompt", file.to_str().unwrap()]).unwrap(),
        "You are Timmy.",
        "a FILE loses its trailing newline"
    );
    // Without SOUL.md the persona is what comes before Hermes's own text.
    std::fs::remove_file(home.path().join("SOUL.md")).unwrap();
    assert_eq!(
        first_system(&["--system-prompt", "soul"]).unwrap(),
        soul.trim()
    );
}

#[test]
fn a_turn_exported_the_next_night_carries_the_turns_before_it() {
    let home = fixture_home(VERSIONS[0]);
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state.json");
    let tok = tokenizer_dir();
    let out = |extra: &[&str]| {
        let mut args = vec!["export"];
        args.extend(nexus_exact_soul(&tok));
        args.extend_from_slice(extra);
        let o = run_in(home.path(), &args);
        assert_eq!(o.status.code(), Some(0));
        lines(&o.stdout)
    };
    let state_arg = ["--state", state.to_str().unwrap()];
    assert!(!out(&state_arg).is_empty());
    let db = rusqlite::Connection::open(home.path().join("state.db")).unwrap();
    // The same UTC day: a nexus session's context stays within its day.
    let now = db
        .query_row(
            "SELECT max(timestamp) FROM messages WHERE session_id = 'nexus-world-0001'",
            [],
            |r| r.get::<_, f64>(0),
        )
        .unwrap()
        + 60.0;
    db.execute(
        "INSERT INTO messages (session_id, role, content, timestamp, active, compacted) VALUES ('nexus-world-0001', 'user', '[perception] tick: the next night', ?1, 1, 0)",
        [now],
    )
    .unwrap();
    db.execute(
        "INSERT INTO messages (session_id, role, content, timestamp, finish_reason, active, compacted) VALUES ('nexus-world-0001', 'assistant', 'Good evening, Nexus.', ?1, 'stop', 1, 0)",
        [now + 1.0],
    )
    .unwrap();
    drop(db);
    let night = out(&state_arg);
    assert_eq!(night.len(), 1);
    let users = user_texts(&night);
    assert_eq!(users.last().unwrap(), "[perception] tick: the next night");
    assert!(users.len() > 1, "earlier turns come as context: {users:?}");
    // Without context the sample is the new turn alone.
    let mut no_context = state_arg.to_vec();
    no_context.extend(["--sft-context", "0"]);
    std::fs::remove_file(&state).unwrap();
    out(&state_arg);
    let db = rusqlite::Connection::open(home.path().join("state.db")).unwrap();
    db.execute(
        "INSERT INTO messages (session_id, role, content, timestamp, active, compacted) VALUES ('nexus-world-0001', 'user', '[perception] tick: another night', ?1, 1, 0)",
        [now + 10.0],
    )
    .unwrap();
    db.execute(
        "INSERT INTO messages (session_id, role, content, timestamp, finish_reason, active, compacted) VALUES ('nexus-world-0001', 'assistant', 'Still here.', ?1, 'stop', 1, 0)",
        [now + 11.0],
    )
    .unwrap();
    drop(db);
    let alone = out(&no_context);
    assert_eq!(user_texts(&alone), ["[perception] tick: another night"]);
}

#[test]
fn a_sample_the_template_rejects_is_skipped_and_named() {
    let home = fixture_home(VERSIONS[0]);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("model");
    std::fs::create_dir(&dir).unwrap();
    let src = repo().join("fixtures/tokenizer/chatml");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let template = std::fs::read_to_string(src.join("chat_template.jinja")).unwrap();
    let strict = format!(
        "{{%- for m in messages %}}{{%- if m.content is string and '[perception]' in m.content %}}{{{{ raise_exception('no perception turns') }}}}{{%- endif %}}{{%- endfor %}}\n{template}"
    );
    std::fs::write(dir.join("chat_template.jinja"), strict).unwrap();
    let (code, lines, stderr) = export(
        home.path(),
        &[
            "--tokenizer",
            dir.to_str().unwrap(),
            "--system-prompt",
            "soul",
        ],
    );
    // The other samples are written; the run is partial (exit 3).
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("template_error="), "{stderr}");
    assert!(stderr.contains("no perception turns"), "{stderr}");
    assert!(!lines.is_empty());
    assert!(
        user_texts(&lines)
            .iter()
            .all(|u| !u.contains("[perception]"))
    );
}

#[test]
fn the_nexus_export_at_default_flags_keeps_its_tool_call() {
    let home = fixture_home(VERSIONS[0]);
    let (code, lines, stderr) = export(home.path(), &["--channel", "nexus"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("over_budget="), "{stderr}");
    let line = lines
        .iter()
        .find(|v| {
            user_texts(std::slice::from_ref(*v))
                .iter()
                .any(|u| u.contains("archon_materialized"))
        })
        .unwrap_or_else(|| panic!("archon_materialized is kept: {stderr}"));
    assert!(names(line, "messages").contains("todo"), "{line}");
    assert!(tool_names(line).contains("todo"), "{line}");
}

#[test]
fn the_tool_retry_gives_its_sft_line_and_its_dpo_pair_at_default_flags() {
    let home = fixture_home(VERSIONS[0]);
    let session = ["--session", "20261125_133228_38953c62"];
    let users = |args: &[&str]| {
        let mut all = session.to_vec();
        all.extend_from_slice(args);
        let (code, lines, stderr) = export(home.path(), &all);
        assert_eq!(code, 0, "{stderr}");
        (user_texts(&lines), lines, stderr)
    };
    // Every exchange a large budget keeps, the default budget keeps too,
    // the failed call's tool turns with it.
    let (roomy, _, _) = users(&["--max-tokens", "32768"]);
    let (default, lines, stderr) = users(&[]);
    assert_eq!(default, roomy, "{stderr}");
    assert!(!stderr.contains("over_budget="), "{stderr}");
    let called: BTreeSet<String> = lines.iter().flat_map(|v| names(v, "messages")).collect();
    assert!(
        called.contains("read_file") && called.contains("todo"),
        "{called:?}"
    );
    let (_, pairs, stderr) = users(&["--format", "dpo"]);
    let retry: Vec<&Value> = pairs
        .iter()
        .filter(|v| v["meta"]["signal"] == "tool-retry")
        .collect();
    assert_eq!(retry.len(), 1, "{stderr}");
    assert!(stderr.contains("tool-retry=1"), "{stderr}");
}

#[test]
fn a_sample_that_does_not_fit_with_the_session_prompt_falls_back_and_is_counted() {
    let home = fixture_home(VERSIONS[0]);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("out");
    let arg = format!("{}/", dir.display());
    let (code, _, stderr) = export(
        home.path(),
        &[
            "--channel",
            "nexus",
            "--system-prompt",
            "session",
            "--out",
            &arg,
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let used = &manifest["tokens"]["system_prompts"];
    assert!(used["session"].as_u64().unwrap() > 0, "{used}");
    assert!(used["soul"].as_u64().unwrap() > 0, "{used}");
    assert_eq!(manifest["counts"]["skipped"].get("over_budget"), None);
    let written: u64 = used
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(
        written,
        manifest["counts"]["channels"]["nexus"].as_u64().unwrap()
    );
    // The one-line summary leaves the prompts to the manifest (above).
    assert!(!stderr.contains("system prompts:"), "{stderr}");
}

#[test]
fn fail_on_drop_exits_7_and_still_writes() {
    let home = fixture_home(VERSIONS[0]);
    let work = tempfile::tempdir().unwrap();
    let prompt = work.path().join("long-prompt.txt");
    std::fs::write(&prompt, "You are Timmy, who speaks at length. ".repeat(300)).unwrap();
    let out = work.path().join("out.jsonl");
    let args = [
        "export",
        "--max-tokens",
        "1000",
        "--system-prompt",
        prompt.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--fail-on-drop",
        "--quiet",
    ];
    let run = run_in(home.path(), &args);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(7), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("dropped "), "{stderr}");
    assert!(out.exists());
    // Without the flag the same run succeeds.
    let run = run_in(home.path(), &args[..args.len() - 2]);
    assert_eq!(run.status.code(), Some(0));
}

#[test]
fn an_exchange_that_is_not_written_does_not_count_toward_the_near_duplicate_cap() {
    let home = fixture_home(VERSIONS[0]);
    let db = rusqlite::Connection::open(home.path().join("state.db")).unwrap();
    drop_fts_triggers(&db);
    for (k, (id, prompt)) in [("dup-a", "You are FORBIDDEN."), ("dup-b", "You are kind.")]
        .into_iter()
        .enumerate()
    {
        let t = 1_800_000_000 + 100 * k as i64;
        db.execute(
            "INSERT INTO sessions (id, source, started_at, system_prompt) VALUES (?1, 'cli', ?2, ?3)",
            rusqlite::params![id, t, prompt],
        )
        .unwrap();
        db.execute(
            "INSERT INTO messages (session_id, role, content, timestamp, active, compacted) VALUES (?1, 'user', 'How is the weather at the gate?', ?2, 1, 0)",
            rusqlite::params![id, t + 1],
        )
        .unwrap();
        db.execute(
            "INSERT INTO messages (session_id, role, content, timestamp, finish_reason, active, compacted) VALUES (?1, 'assistant', 'Calm and clear at the gate.', ?2, 'stop', 1, 0)",
            rusqlite::params![id, t + 2],
        )
        .unwrap();
    }
    drop(db);
    // A template that refuses the first session's prompt.
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("model");
    std::fs::create_dir(&dir).unwrap();
    let src = repo().join("fixtures/tokenizer/chatml");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let template = std::fs::read_to_string(src.join("chat_template.jinja")).unwrap();
    std::fs::write(
        dir.join("chat_template.jinja"),
        format!("{{%- if 'FORBIDDEN' in messages[0].content %}}{{{{ raise_exception('no forbidden prompts') }}}}{{%- endif %}}\n{template}"),
    )
    .unwrap();
    let (code, lines, stderr) = export(
        home.path(),
        &[
            "--session",
            "dup-a,dup-b",
            "--system-prompt",
            "session",
            "--near-duplicate-cap",
            "1",
            "--tokenizer",
            dir.to_str().unwrap(),
        ],
    );
    // A sample the template refuses makes the run partial (exit 3).
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("template_error=1"), "{stderr}");
    assert!(!stderr.contains("near_duplicate"), "{stderr}");
    assert_eq!(lines.len(), 1, "{stderr}");
    assert_eq!(lines[0]["meta"]["session"], "dup-b");
}
