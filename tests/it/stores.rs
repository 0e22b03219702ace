//! Store shapes a real 0.13/0.19 run cannot give: the newest schema, the
//! earliest one, a response store alone, odd and hostile files.

use std::path::Path;

use serde_json::Value;

use crate::common::*;

fn sql(home: &Path, batch: &str) {
    let db = rusqlite::Connection::open(home.join("state.db")).unwrap();
    db.execute_batch(batch).unwrap();
}

#[test]
fn newest_schema_with_system_prompts_table_and_structured_content() {
    let home = fixture_home(VERSIONS[0]);
    sql(
        home.path(),
        "CREATE TABLE system_prompts (hash TEXT PRIMARY KEY, prompt TEXT NOT NULL);
         ALTER TABLE sessions ADD COLUMN system_prompt_hash TEXT;
         ALTER TABLE sessions ADD COLUMN created_source TEXT;
         ALTER TABLE messages ADD COLUMN _compressed_summary INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE messages ADD COLUMN display_kind TEXT;
         CREATE TABLE session_turn_leases (session_id TEXT, lease TEXT);
         INSERT INTO system_prompts SELECT 'h-' || id, 'MOVED PROMPT of ' || id || ': ' || system_prompt FROM sessions WHERE system_prompt IS NOT NULL;
         UPDATE sessions SET system_prompt_hash = 'h-' || id, system_prompt = NULL WHERE system_prompt IS NOT NULL;
         UPDATE messages SET _compressed_summary = 1 WHERE content LIKE '[CONTEXT COMPACTION%';
         UPDATE messages SET content = char(0) || 'json:' || '[{\"type\":\"text\",\"text\":\"Look at this map\"},{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,AAAA\"}}]'
           WHERE id = (SELECT MIN(id) FROM messages WHERE session_id = 'nexus-world-0001' AND role = 'user');
         INSERT INTO messages (session_id, role, content, timestamp, active, compacted, display_kind)
           VALUES ('nexus-world-0001', 'user', 'HIDDEN SCAFFOLDING', 1.0, 1, 0, 'hidden');
         UPDATE schema_version SET version = 30;",
    );
    let (code, lines, stderr) = export(home.path(), &["--channel", "nexus"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("newer"), "v30 is known: {stderr}");
    let text: String = lines.iter().map(Value::to_string).collect();
    assert!(
        text.contains("MOVED PROMPT of nexus-world-0001"),
        "system prompt from system_prompts"
    );
    assert!(
        text.contains("Look at this map\\n[image]"),
        "structured content decoded"
    );
    assert!(!text.contains("HIDDEN SCAFFOLDING"));
    assert!(!text.contains("CONTEXT COMPACTION"));
    assert!(!text.contains("json:"));
}

#[test]
fn earliest_schema_without_finish_reason_or_active() {
    let dir = tempfile::tempdir().unwrap();
    sql(
        dir.path(),
        r#"CREATE TABLE schema_version (version INTEGER NOT NULL);
        INSERT INTO schema_version VALUES (1);
        CREATE TABLE sessions (id TEXT PRIMARY KEY, source TEXT NOT NULL, user_id TEXT, model TEXT,
          model_config TEXT, system_prompt TEXT, parent_session_id TEXT, started_at REAL NOT NULL,
          ended_at REAL, end_reason TEXT, message_count INTEGER DEFAULT 0, tool_call_count INTEGER DEFAULT 0,
          input_tokens INTEGER DEFAULT 0, output_tokens INTEGER DEFAULT 0);
        CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL REFERENCES sessions(id),
          role TEXT NOT NULL, content TEXT, tool_call_id TEXT, tool_calls TEXT, tool_name TEXT,
          timestamp REAL NOT NULL, token_count INTEGER);
        INSERT INTO sessions (id, source, system_prompt, started_at) VALUES ('20260301_101500_a1b2c3', 'cli', 'You are Hermes.', 1772359000);
        INSERT INTO messages (session_id, role, content, timestamp) VALUES ('20260301_101500_a1b2c3', 'user', 'list files', 1772359001);
        INSERT INTO messages (session_id, role, content, tool_calls, timestamp) VALUES ('20260301_101500_a1b2c3', 'assistant', '',
          '[{"id":"call_1","type":"function","function":{"name":"terminal","arguments":"{\"command\":\"ls\"}"}}]', 1772359002);
        INSERT INTO messages (session_id, role, content, tool_call_id, timestamp) VALUES ('20260301_101500_a1b2c3', 'tool', 'README.md', 'call_1', 1772359003);
        INSERT INTO messages (session_id, role, content, timestamp) VALUES ('20260301_101500_a1b2c3', 'assistant', 'You have a README.', 1772359004);"#,
    );
    let (code, lines, stderr) = export(dir.path(), &["--channel", "tui"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(lines.len(), 1);
    let msgs = lines[0]["messages"].as_array().unwrap();
    assert_eq!(msgs[0]["content"], "You are Hermes.");
    assert_eq!(
        msgs[2]["tool_calls"][0]["function"]["arguments"]["command"],
        "ls"
    );
    assert_eq!(
        msgs[3]["name"], "terminal",
        "tool name recovered from the call"
    );
    let out = run_in(dir.path(), &["sources", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state_db"]["schema_version"], 1);
}

#[test]
fn a_response_store_alone_gives_its_conversations_with_instructions() {
    let home = fixture_home(VERSIONS[0]);
    std::fs::remove_file(home.path().join("state.db")).unwrap();
    for side in ["state.db-wal", "state.db-shm"] {
        let _ = std::fs::remove_file(home.path().join(side));
    }
    // An idempotency replay row must be skipped.
    let rs = rusqlite::Connection::open(home.path().join("response_store.db")).unwrap();
    rs.execute(
        "INSERT INTO responses (response_id, data, accessed_at) VALUES ('idem:replay-1', '{\"not\": \"a response\"}', 1.0)",
        [],
    )
    .unwrap();
    drop(rs);
    std::fs::remove_dir_all(home.path().join("sessions")).unwrap();
    let (code, lines, stderr) = export(home.path(), &["--source", "api_server"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("response_store.db="), "{stderr}");
    assert_eq!(lines.len(), 2, "two Responses sessions: {stderr}");
    let users = user_texts(&lines);
    // Each user turn once, though the store records every input twice.
    let mut sorted = users.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), users.len(), "{users:#?}");
    assert!(users.iter().any(|u| u.starts_with("First responses turn")));
    for v in &lines {
        let system = v["messages"][0]["content"].as_str().unwrap();
        assert_eq!(v["messages"][0]["role"], "system");
        assert!(!system.is_empty());
    }
}

#[test]
fn responses_instructions_join_the_stored_system_prompt() {
    let home = fixture_home(VERSIONS[0]);
    let rs = rusqlite::Connection::open(home.path().join("response_store.db")).unwrap();
    let instr: String = rs
        .query_row("SELECT json_extract(data, '$.instructions') FROM responses WHERE json_extract(data, '$.instructions') IS NOT NULL LIMIT 1", [], |r| r.get(0))
        .unwrap();
    drop(rs);
    let (_, lines, _) = export(home.path(), &["--source", "api_server", "--no-redact"]);
    assert!(
        lines.iter().any(|v| v["messages"][0]["content"]
            .as_str()
            .unwrap()
            .ends_with(&instr)),
        "instructions {instr:?} not in any system prompt"
    );
}

#[test]
fn odd_and_hostile_files_get_one_clear_line() {
    // A SQLite file that is not a Hermes store.
    let dir = tempfile::tempdir().unwrap();
    rusqlite::Connection::open(dir.path().join("state.db"))
        .unwrap()
        .execute_batch("CREATE TABLE recipes (name TEXT); INSERT INTO recipes VALUES ('soup');")
        .unwrap();
    let out = run_in(dir.path(), &["export"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("not a Hermes state.db"), "{stderr}");
    assert!(!stderr.contains("panicked"));

    // An empty HERMES_HOME.
    let empty = tempfile::tempdir().unwrap();
    let out = run_in(empty.path(), &["sources"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);

    // An unreadable store (root reads everything, so only check when not root).
    let home = fixture_home(VERSIONS[0]);
    let unreadable = home
        .path()
        .join("sessions")
        .join("session_locked-0001.json");
    std::fs::write(&unreadable, "{}").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&unreadable, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let out = run_in(home.path(), &["export"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("session_locked-0001.json"), "{stderr}");
}

#[test]
fn request_dumps_and_links_out_of_the_home_are_never_read() {
    let home = fixture_home(VERSIONS[0]);
    let sessions = home.path().join("sessions");
    // A request dump with raw headers: never opened, so its key never shows.
    std::fs::write(
        sessions.join("request_dump_nexus-world-0001_20261125_120000_000001.json"),
        r#"{"headers": {"Authorization": "Bearer DUMPSECRET0123456789"}, "messages": [{"role": "user", "content": "DUMPSECRET0123456789"}]}"#,
    )
    .unwrap();
    // A link to a session file outside HERMES_HOME.
    let outside = tempfile::tempdir().unwrap();
    let foreign = outside.path().join("session_foreign-0001.json");
    std::fs::write(
        &foreign,
        r#"{"session_id": "foreign-0001", "platform": "cli", "messages": [{"role": "user", "content": "OUTSIDE THE HOME"}, {"role": "assistant", "content": "should not be read"}]}"#,
    )
    .unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&foreign, sessions.join("session_foreign-0001.json")).unwrap();
    let out = run_in(home.path(), &["export", "--no-redact"]);
    assert!(out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("DUMPSECRET"));
    assert!(!all.contains("OUTSIDE THE HOME"));
}

/// Adds one long Nexus session of `turns` exchanges (FTS triggers dropped
/// first so the insert is quick).
fn long_session(home: &Path, id: &str, turns: usize) {
    let db = rusqlite::Connection::open(home.join("state.db")).unwrap();
    drop_fts_triggers(&db);
    db.execute(
        "INSERT INTO sessions (id, source, started_at, system_prompt) VALUES (?1, 'api_server', 1800000000, 'You are Timmy.')",
        [id],
    )
    .unwrap();
    db.execute(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < ?2 * 2 - 1)
         INSERT INTO messages (session_id, role, content, timestamp, finish_reason, active, compacted)
         SELECT ?1, CASE i % 2 WHEN 0 THEN 'user' ELSE 'assistant' END,
                CASE i % 2 WHEN 0 THEN '[perception] tick ' || (i / 2) ELSE 'Noted, tick ' || (i / 2) || '.' END,
                1800000000 + i, CASE i % 2 WHEN 1 THEN 'stop' END, 1, 0
         FROM n",
        rusqlite::params![id, turns as i64],
    )
    .unwrap();
}

#[test]
fn a_very_long_session_is_read_in_parts_with_every_turn_once() {
    let home = fixture_home(VERSIONS[0]);
    long_session(home.path(), "nexus-longest", 3000);
    let users = |part_rows: &str| -> Vec<String> {
        let out = std::process::Command::new(bin())
            .args([
                "export",
                "--session",
                "nexus-longest",
                "--near-duplicate-cap",
                "0",
                "--hermes-home",
                home.path().to_str().unwrap(),
            ])
            .env("HERMES_HARVEST_PART_ROWS", part_rows)
            .output()
            .unwrap();
        assert!(out.status.success());
        user_texts(&lines(&out.stdout))
    };
    let whole = users("1000000");
    assert_eq!(whole.len(), 3000);
    let parts = users("700");
    assert_eq!(parts, whole, "reading in parts loses or repeats nothing");
}

#[test]
fn rows_stored_out_of_time_order_come_in_id_order_whole_or_in_parts() {
    // Each row's time is earlier than the one before, so the session index
    // (session, time) holds them backwards; two assistant rows have broken
    // tool calls. Small sessions are read whole in index order and put in
    // id order, larger ones in order part by part: both give the turns,
    // and the bad rows' problems, in id order.
    let home = fixture_home(VERSIONS[0]);
    let db = rusqlite::Connection::open(home.path().join("state.db")).unwrap();
    drop_fts_triggers(&db);
    db.execute_batch(
        "INSERT INTO sessions (id, source, started_at, system_prompt) VALUES ('nexus-backwards', 'api_server', 1800000000, 'You are Timmy.');
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 39)
         INSERT INTO messages (session_id, role, content, tool_calls, timestamp, finish_reason, active, compacted)
         SELECT 'nexus-backwards', CASE i % 2 WHEN 0 THEN 'user' ELSE 'assistant' END,
                CASE i % 2 WHEN 0 THEN '[perception] tick ' || (i / 2) ELSE 'Noted, tick ' || (i / 2) || '.' END,
                CASE WHEN i IN (7, 23) THEN '{oops ' || i END,
                1800000000 - i, CASE i % 2 WHEN 1 THEN 'stop' END, 1, 0
         FROM n",
    )
    .unwrap();
    let first_id: i64 = db
        .query_row(
            "SELECT MIN(id) FROM messages WHERE session_id = 'nexus-backwards'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    drop(db);
    let read = |part_rows: &str| -> (Vec<String>, Vec<String>) {
        let out = std::process::Command::new(bin())
            .args([
                "export",
                "--session",
                "nexus-backwards",
                "--near-duplicate-cap",
                "0",
                "--hermes-home",
                home.path().to_str().unwrap(),
            ])
            .env("HERMES_HARVEST_PART_ROWS", part_rows)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let problems = stderr
            .lines()
            .filter(|l| l.contains("tool_calls is not JSON"))
            .map(str::to_string)
            .collect();
        (user_texts(&lines(&out.stdout)), problems)
    };
    let (whole, whole_problems) = read("1000000");
    // A user turn whose reply was a bad row joins the next one.
    let tick = |t: i32| format!("[perception] tick {t}");
    let expected: Vec<String> = (0..20)
        .filter(|t| ![4, 12].contains(t))
        .map(|t| match t {
            3 | 11 => format!("{}\n\n{}", tick(t), tick(t + 1)),
            t => tick(t),
        })
        .collect();
    let mut seen = whole.clone();
    seen.dedup();
    assert_eq!(seen, expected, "turns in id order");
    assert_eq!(whole_problems.len(), 2, "{whole_problems:?}");
    for (problem, i) in whole_problems.iter().zip([7, 23]) {
        assert!(
            problem.contains(&format!("row {}:", first_id + i)),
            "problems in id order: {whole_problems:?}"
        );
    }
    // Parts repeat their last turns as the next part's context.
    let (mut parts, parts_problems) = read("6");
    parts.dedup();
    assert_eq!(
        (parts, parts_problems),
        (seen, whole_problems),
        "in parts: the same turns and problems"
    );
}

#[test]
fn an_oversize_message_is_not_read_and_its_turn_is_skipped() {
    let home = fixture_home(VERSIONS[0]);
    let db = rusqlite::Connection::open(home.path().join("state.db")).unwrap();
    db.execute_batch("DROP TRIGGER IF EXISTS messages_fts_update; DROP TRIGGER IF EXISTS messages_fts_trigram_update;").ok();
    // 2 MB of text in one reply: far over any sample budget.
    db.execute(
        "UPDATE messages SET content = 'HUGE' || printf('%.*c', 2000000, 'x') WHERE id = (SELECT MAX(id) FROM messages WHERE session_id = 'nexus-world-0001' AND role = 'assistant')",
        [],
    )
    .unwrap();
    drop(db);
    let (code, lines, stderr) = export(home.path(), &["--session", "nexus-world-0001"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("oversize_message=1"), "{stderr}");
    assert!(!lines.iter().any(|v| v.to_string().contains("HUGExxxx")));
    assert!(!lines.is_empty(), "the other turns are still exported");
}

#[test]
fn a_profile_has_its_own_stores() {
    let root = tempfile::tempdir().unwrap();
    let profile = root.path().join("profiles").join("timmy");
    hermes_harvest::fixture::materialize(&repo().join("fixtures/hermes-0.13.0/home"), &profile)
        .unwrap();
    let out = run_in(root.path(), &["sources"]);
    assert_eq!(out.status.code(), Some(1), "the root itself has no stores");
    assert!(String::from_utf8_lossy(&out.stderr).contains("profiles here: timmy"));
    let out = run_in(root.path(), &["sources", "--profile", "timmy", "--json"]);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state_db"]["schema_version"], 11);
    let (code, lines, _) = export(root.path(), &["--profile", "timmy", "--channel", "nexus"]);
    assert_eq!(code, 0);
    assert!(!lines.is_empty());
    let out = run_in(root.path(), &["export", "--profile", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("profile \"nobody\" not found"));
}
