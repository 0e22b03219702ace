//! DPO pairs from the real preference signals of the captures, and
//! `validate` on every output and on hand-broken files.

use serde_json::Value;

use crate::common::*;

fn text(m: &Value) -> &str {
    m["content"].as_str().unwrap_or_default()
}

fn last_user(pair: &Value) -> &str {
    text(pair["prompt"].as_array().unwrap().last().unwrap())
}

#[test]
fn nexus_dpo_yields_the_regeneration_pair() {
    let home = fixture_home(VERSIONS[0]);
    let (code, pairs, stderr) = export(
        home.path(),
        &[
            "--channel",
            "nexus",
            "--format",
            "dpo",
            "--tokenizer",
            &tokenizer_dir(),
            "--system-prompt",
            "soul",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(pairs.len(), 1, "{stderr}");
    let p = &pairs[0];
    assert_eq!(
        last_user(p),
        "[perception] scene_change: dusk falls over the Nexus plaza"
    );
    let chosen = text(&p["chosen"][0]);
    let rejected = text(&p["rejected"][0]);
    assert!(
        chosen.starts_with("Reply #5 "),
        "the later answer is chosen: {chosen}"
    );
    assert!(rejected.starts_with("Reply #4 "), "{rejected}");
    assert!(
        stderr.contains("regenerate=1 rewind=0 tool-retry=0"),
        "{stderr}"
    );
    // The earlier turns of the session are the prompt, as far as the budget
    // allows, with the system prompt (its SOUL.md part) first.
    let prompt = p["prompt"].as_array().unwrap();
    assert_eq!(prompt[0]["role"], "system");
    let soul = std::fs::read_to_string(home.path().join("SOUL.md")).unwrap();
    assert_eq!(text(&prompt[0]), soul.trim());
    assert!(
        prompt
            .iter()
            .any(|m| text(m).starts_with("[perception] archon_entering"))
    );
}

#[test]
fn telegram_dpo_yields_the_rewind_and_tool_retry_pairs() {
    let home = fixture_home(VERSIONS[0]);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("dpo");
    let arg = format!("{}/", dir.display());
    let out = run_in(
        home.path(),
        &[
            "export",
            "--channel",
            "telegram",
            "--format",
            "dpo",
            "--tokenizer",
            &tokenizer_dir(),
            "--out",
            &arg,
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let mut pairs = lines(&std::fs::read(dir.join("train.jsonl")).unwrap());
    pairs.extend(lines(
        &std::fs::read(dir.join("valid.jsonl")).unwrap_or_default(),
    ));
    let rewind: Vec<&Value> = pairs
        .iter()
        .filter(|p| last_user(p) == "What colour is the sky over the plaza right now?")
        .collect();
    assert_eq!(rewind.len(), 1);
    assert!(
        text(&rewind[0]["rejected"][0]).starts_with("Reply #24 "),
        "the undone reply is rejected"
    );
    assert!(
        text(&rewind[0]["chosen"][0]).starts_with("Reply #25 "),
        "the re-sent one is chosen"
    );
    // /undo followed by a different prompt is not a pair.
    assert!(
        !pairs
            .iter()
            .any(|p| last_user(p).contains("northern ridge") || last_user(p).contains("joke"))
    );
    // Tool retries: the failed call is rejected, the call that worked chosen.
    let retry = |user: &str| -> (String, String) {
        let p = pairs
            .iter()
            .find(|p| last_user(p).contains(user))
            .unwrap_or_else(|| panic!("no pair for {user}"));
        let name = |side: &str| {
            p[side].as_array().unwrap().last().unwrap()["tool_calls"][0]["function"]["name"]
                .as_str()
                .unwrap()
                .to_string()
        };
        (name("chosen"), name("rejected"))
    };
    assert_eq!(
        retry("CALL_UNKNOWN_TOOL"),
        ("todo".into(), "frobnicate_world".into())
    );
    // read_file failing on a missing file, then todo, is not a retry of the
    // same step: no pair.
    assert!(!pairs.iter().any(|p| last_user(p).contains("FAIL_TOOL")));
    // The pair carries the chosen tool's definition.
    let p = pairs
        .iter()
        .find(|p| last_user(p).contains("CALL_UNKNOWN_TOOL"))
        .unwrap();
    assert!(
        p["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["function"]["name"] == "todo")
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["format"], "dpo");
    assert_eq!(manifest["counts"]["signals"]["rewind"], 1);
    assert_eq!(manifest["counts"]["signals"]["tool-retry"], 1);

    let (_, only, _) = export(
        home.path(),
        &[
            "--channel",
            "telegram",
            "--format",
            "dpo",
            "--signals",
            "rewind",
        ],
    );
    assert_eq!(only.len(), 1);
}

#[test]
fn no_pairs_is_a_clear_statement_not_an_error() {
    let home = fixture_home(VERSIONS[0]);
    let (code, pairs, stderr) = export(home.path(), &["--channel", "tui", "--format", "dpo"]);
    assert_eq!(code, 0);
    assert!(pairs.is_empty());
    assert!(stderr.contains("wrote 0 dpo lines"), "{stderr}");
    assert!(
        stderr.contains("regenerate=0 rewind=0 tool-retry=0"),
        "{stderr}"
    );
}

#[test]
fn both_versions_yield_regeneration_and_tool_retry_pairs() {
    for version in VERSIONS {
        let home = fixture_home(version);
        let (code, pairs, stderr) = export(home.path(), &["--format", "dpo"]);
        assert_eq!(code, 0, "{version}: {stderr}");
        assert!(pairs.len() >= 4, "{version}: {stderr}");
        for p in &pairs {
            assert_ne!(p["chosen"], p["rejected"]);
        }
    }
}

#[test]
fn flat_style_is_single_turn_strings_without_tool_pairs() {
    let home = fixture_home(VERSIONS[0]);
    let (code, pairs, stderr) = export(
        home.path(),
        &[
            "--format",
            "dpo",
            "--dpo-style",
            "flat",
            "--system-prompt",
            "none",
        ],
    );
    assert_eq!(code, 0);
    assert!(!pairs.is_empty());
    for p in &pairs {
        assert!(p["prompt"].is_string() && p["chosen"].is_string() && p["rejected"].is_string());
        assert!(p.get("system").is_none());
    }
    // Only the unknown-tool retry is a tool-retry pair (read_file failing,
    // then todo, is not the same step).
    assert!(stderr.contains("tool_pair_in_flat_style=1"), "{stderr}");
}

#[test]
fn validate_passes_on_every_output_of_the_tool() {
    let home = fixture_home(VERSIONS[0]);
    let work = tempfile::tempdir().unwrap();
    let variants: &[&[&str]] = &[
        &[],
        &["--target", "openai"],
        &["--include-reasoning"],
        &["--format", "dpo"],
        &["--format", "dpo", "--target", "openai"],
        &["--format", "dpo", "--dpo-style", "flat"],
        &["--max-tokens", "300", "--system-prompt", "none"],
    ];
    for (i, args) in variants.iter().enumerate() {
        let file = work.path().join(format!("{i}.jsonl"));
        let mut full = vec!["export", "--out", file.to_str().unwrap()];
        full.extend_from_slice(args);
        assert_eq!(run_in(home.path(), &full).status.code(), Some(0));
        let v = run(&["validate", file.to_str().unwrap()]);
        assert_eq!(
            v.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&v.stdout)
        );
    }
}

#[test]
fn validate_reports_broken_files_by_line() {
    let home = fixture_home(VERSIONS[0]);
    let sft = run_in(home.path(), &["export", "--system-prompt", "none"]).stdout;
    let dpo = run_in(home.path(), &["export", "--format", "dpo"]).stdout;
    let sft_lines: Vec<Value> = lines(&sft);
    let mut wrong_role = sft_lines[0].clone();
    wrong_role["messages"][1]["role"] = "user".into();
    let mut trailing_user = sft_lines[1].clone();
    trailing_user["messages"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"role": "user", "content": "and?"}));
    let mut system_late = sft_lines[2].clone();
    system_late["messages"]
        .as_array_mut()
        .unwrap()
        .insert(1, serde_json::json!({"role": "system", "content": "late"}));
    let tool_line = sft_lines
        .iter()
        .find(|v| v.to_string().contains("tool_call_id"))
        .unwrap()
        .clone();
    let mut bad_id = tool_line.clone();
    for m in bad_id["messages"].as_array_mut().unwrap() {
        if m["role"] == "tool" {
            m["tool_call_id"] = "call_nobody".into();
        }
    }
    let first_dpo = String::from_utf8_lossy(&dpo)
        .lines()
        .next()
        .unwrap()
        .to_string();
    let file_lines = [
        sft_lines[3].to_string(),  // 1 ok
        wrong_role.to_string(),    // 2 user after user
        trailing_user.to_string(), // 3 ends with a user turn
        String::new(),             // 4 blank
        first_dpo,                 // 5 a dpo line in an sft file
        system_late.to_string(),   // 6 system not first
        bad_id.to_string(),        // 7 tool result answers no call
        "{\"messages\": [".into(), // 8 not JSON
    ];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.jsonl");
    std::fs::write(&file, file_lines.join("\n") + "\n").unwrap();
    let out = run(&["validate", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4));
    let report = String::from_utf8_lossy(&out.stdout);
    let name = file.to_str().unwrap();
    for (line, needle) in [
        (3, "last message must be an assistant reply"),
        (4, "blank line"),
        (5, "one shape per file"),
        (6, "system message must come first"),
        (7, "answers no open tool call"),
        (8, "not JSON"),
    ] {
        assert!(
            report
                .lines()
                .any(|l| l.starts_with(&format!("{name}:{line}:")) && l.contains(needle)),
            "line {line} should report {needle:?}:\n{report}"
        );
    }
    assert!(
        report.lines().any(|l| l.starts_with(&format!("{name}:2:"))),
        "wrong roles on line 2:\n{report}"
    );
    assert!(
        !report.lines().any(|l| l.starts_with(&format!("{name}:1:"))),
        "line 1 is fine:\n{report}"
    );

    // A DPO file whose prompt does not end with a user turn.
    let mut d: Value =
        serde_json::from_str(String::from_utf8_lossy(&dpo).lines().next().unwrap()).unwrap();
    d["prompt"].as_array_mut().unwrap().pop();
    std::fs::write(&file, format!("{d}\n")).unwrap();
    let out = run(&["validate", file.to_str().unwrap(), "--format", "dpo"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stdout).contains(":1: prompt: must end with a user turn"));
}

#[test]
fn a_nexus_pair_prompt_starts_at_its_day_unit() {
    let home = emptied_state_db();
    // Day one: an exchange; day two: an exchange whose answer the user
    // regenerates. The pair lies in day two's unit.
    let t = 1_800_000_000.0;
    let row = |role: &str, text: &str, at: f64| {
        format!(
            "INSERT INTO messages (session_id, role, content, timestamp, finish_reason, active, compacted) VALUES ('nexus-world-0001', '{role}', '{text}', {at}, 'stop', 1, 0);"
        )
    };
    let day2 = t + 86_400.0;
    crate::cron::sql(
        home.path(),
        &[
            format!("INSERT INTO sessions (id, source, started_at) VALUES ('nexus-world-0001', 'api_server', {t});"),
            row("user", "tell me about day one", t),
            row("assistant", "all about day one", t + 1.0),
            row("user", "tell me about day two", day2),
            row("assistant", "a first answer", day2 + 1.0),
            row("user", "tell me about day two", day2 + 2.0),
            row("assistant", "a better answer", day2 + 3.0),
        ]
        .concat(),
    );
    let work = tempfile::tempdir().unwrap();
    let out = format!("{}/", work.path().join("out").display());
    let args = ["--format", "dpo", "--channel", "nexus", "--out", &out];
    let (code, _, err) = export(home.path(), &args);
    assert_eq!(code, 0, "{err}");
    let mut pairs = Vec::new();
    for split in ["train", "valid"] {
        if let Ok(b) = std::fs::read(work.path().join(format!("out/{split}.jsonl"))) {
            pairs.extend(lines(&b));
        }
    }
    assert_eq!(pairs.len(), 1, "{err}");
    let p = &pairs[0];
    assert!(
        p["meta"]["unit"].as_str().unwrap().ends_with("@2027-01-16"),
        "{p}"
    );
    let prompt: Vec<&str> = p["prompt"].as_array().unwrap().iter().map(text).collect();
    assert!(
        !prompt.iter().any(|t| t.contains("day one")),
        "the prompt carries another day's unit: {prompt:?}"
    );
    assert_eq!(text(&p["chosen"][0]), "a better answer");
}
