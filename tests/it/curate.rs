//! Curation: provenance on every line, duplicates and junk out, the dry
//! run, the dataset card and `forget`.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::common::*;
use crate::cron::{append_turn, dir_lines, read, sql};

/// The stores' files (SQLite's shared-memory and WAL side files appear
/// when a reader opens a WAL database; they hold no data here).
fn stores_of(home: &Path) -> Vec<(std::path::PathBuf, usize, u64)> {
    snapshot_files(home)
        .into_iter()
        .filter(|(p, _, _)| {
            let name = p.to_string_lossy();
            !name.ends_with("-shm") && !name.ends_with("-wal")
        })
        .collect()
}

/// The line as trainers judge it: without `meta`.
fn without_meta(v: &Value) -> String {
    let mut v = v.clone();
    v.as_object_mut().unwrap().remove("meta");
    v.to_string()
}

#[test]
fn every_line_has_meta_and_no_two_lines_are_equal_without_it() {
    for version in VERSIONS {
        let home = fixture_home(version);
        for args in [
            &["--format", "sft"][..],
            &["--format", "dpo"],
            &["--format", "dpo", "--dpo-style", "flat"],
        ] {
            let (c, lines, err) = export(home.path(), args);
            assert_eq!(c, 0, "{err}");
            assert!(!lines.is_empty(), "{version} {args:?}");
            let mut seen = BTreeSet::new();
            for l in &lines {
                let m = &l["meta"];
                assert!(
                    m["session"].as_str().is_some_and(|s| !s.is_empty()),
                    "{version} {args:?}: {l}"
                );
                assert!(m["channel"].is_string() && m["source"].is_string(), "{l}");
                if args.contains(&"dpo") {
                    assert!(m["signal"].is_string(), "{l}");
                }
                assert!(
                    seen.insert(without_meta(l)),
                    "{version} {args:?}: a duplicate line {l}"
                );
            }
        }
        // No meta on request, and never for the OpenAI API.
        for args in [&["--no-meta"][..], &["--target", "openai"]] {
            let (c, lines, err) = export(home.path(), args);
            assert_eq!(c, 0, "{err}");
            assert!(!lines.is_empty());
            assert!(lines.iter().all(|l| l.get("meta").is_none()), "{args:?}");
        }
    }
}

#[test]
fn exact_duplicates_are_written_once_unless_kept() {
    let home = fixture_home(VERSIONS[0]);
    // A second session with the very same conversation as another one.
    sql(
        home.path(),
        "INSERT INTO sessions (id, source, started_at, system_prompt) VALUES ('copy-a', 'api_server', 1800000000, 'You are Timmy.'), ('copy-b', 'webhook', 1800000100, 'You are Timmy.');
         INSERT INTO messages (session_id, role, content, timestamp, active, compacted) VALUES ('copy-a', 'user', 'Where is the gate keeper?', 1800000000, 1, 0);
         INSERT INTO messages (session_id, role, content, timestamp, finish_reason, active, compacted) VALUES ('copy-a', 'assistant', 'By the eastern gate, as always.', 1800000001, 'stop', 1, 0);
         INSERT INTO messages (session_id, role, content, timestamp, active, compacted) VALUES ('copy-b', 'user', 'Where is the gate keeper?', 1800000100, 1, 0);
         INSERT INTO messages (session_id, role, content, timestamp, finish_reason, active, compacted) VALUES ('copy-b', 'assistant', 'By the eastern gate, as always.', 1800000101, 'stop', 1, 0);",
    );
    let args = ["--session", "copy-a,copy-b"];
    let (c, once, err) = export(home.path(), &args);
    assert_eq!(c, 0, "{err}");
    assert_eq!(once.len(), 1, "{err}");
    assert!(err.contains("duplicate_sample=1"), "{err}");
    let (c, both, err) = export(
        home.path(),
        &["--session", "copy-a,copy-b", "--keep-duplicates"],
    );
    assert_eq!(c, 0, "{err}");
    assert_eq!(both.len(), 2);
    assert_eq!(without_meta(&both[0]), without_meta(&both[1]));
    assert_ne!(both[0]["meta"]["session"], both[1]["meta"]["session"]);
}

/// A Nexus session of `n` ticks that differ only in their figures.
fn ticking_world(home: &Path, id: &str, n: usize, from: usize) {
    let db = rusqlite::Connection::open(home.join("state.db")).unwrap();
    drop_fts_triggers(&db);
    db.execute(
        "INSERT OR IGNORE INTO sessions (id, source, started_at) VALUES (?1, 'api_server', 1800000000)",
        [id],
    )
    .unwrap();
    for i in from..from + n {
        let t = 1_800_000_000 + 60 * i as i64;
        let at = format!("{},{},{}", i % 17, -((i % 5) as i64), i % 3);
        let when = chrono::DateTime::from_timestamp(t, 0).unwrap().to_rfc3339();
        db.execute(
            "INSERT INTO messages (session_id, role, content, timestamp, active, compacted) VALUES (?1, 'user', ?2, ?3, 1, 0)",
            rusqlite::params![id, format!("[perception] world_tick: tick {i} at {when}, archon at ({at})"), t],
        )
        .unwrap();
        db.execute(
            "INSERT INTO messages (session_id, role, content, timestamp, finish_reason, active, compacted) VALUES (?1, 'assistant', ?2, ?3, 'stop', 1, 0)",
            rusqlite::params![id, format!("Tick {i} noted: the archon stands at ({at}), all calm."), t + 1],
        )
        .unwrap();
    }
}

fn tick_turns(lines: &[Value]) -> usize {
    user_texts(lines)
        .iter()
        .filter(|t| t.contains("world_tick: tick"))
        .count()
}

#[test]
fn two_hundred_near_identical_ticks_yield_at_most_the_cap() {
    let home = fixture_home(VERSIONS[0]);
    ticking_world(home.path(), "nexus-ticker", 200, 0);
    let (c, lines, err) = export(home.path(), &["--session", "nexus-ticker"]);
    assert_eq!(c, 0, "{err}");
    let n = tick_turns(&lines);
    assert!((1..=3).contains(&n), "{n} ticks with the default cap of 3");
    assert!(lines.len() <= 3);
    assert!(err.contains("near_duplicate=197"), "{err}");
    let (_, lines, _) = export(
        home.path(),
        &["--session", "nexus-ticker", "--near-duplicate-cap", "5"],
    );
    assert_eq!(tick_turns(&lines), 5);
    let (_, lines, _) = export(
        home.path(),
        &[
            "--session",
            "nexus-ticker",
            "--near-duplicate-cap",
            "0",
            "--sft-context",
            "0",
        ],
    );
    assert_eq!(tick_turns(&lines), 200, "0 turns the cap off");

    // The cap holds across nightly runs: the state remembers.
    let work = tempfile::tempdir().unwrap();
    let dir = format!("{}/", work.path().join("out").display());
    let state = work.path().join("state.json");
    let cron = || {
        run_ok(
            home.path(),
            &[
                "export",
                "--session",
                "nexus-ticker",
                "--out",
                &dir,
                "--state",
                state.to_str().unwrap(),
            ],
        );
    };
    cron();
    ticking_world(home.path(), "nexus-ticker", 50, 200);
    cron();
    let all = dir_lines(&work.path().join("out"));
    assert!(
        tick_turns(&all) <= 3,
        "{} ticks over two runs",
        tick_turns(&all)
    );
}

#[test]
fn short_replies_and_harness_only_sessions_are_skipped_with_a_reason() {
    let home = fixture_home(VERSIONS[0]);
    sql(
        home.path(),
        "INSERT INTO sessions (id, source, started_at) VALUES ('terse', 'cli', 1800000000), ('review-only', 'cli', 1800000000);
         INSERT INTO messages (session_id, role, content, timestamp, active, compacted) VALUES ('terse', 'user', 'Are you there?', 1800000000, 1, 0);
         INSERT INTO messages (session_id, role, content, timestamp, finish_reason, active, compacted) VALUES ('terse', 'assistant', 'ok', 1800000001, 'stop', 1, 0);
         INSERT INTO messages (session_id, role, content, timestamp, active, compacted) VALUES ('review-only', 'user', 'Review the conversation above and consider saving to memory.', 1800000000, 1, 0);
         INSERT INTO messages (session_id, role, content, timestamp, finish_reason, active, compacted) VALUES ('review-only', 'assistant', 'Nothing to save.', 1800000001, 'stop', 1, 0);",
    );
    let (c, lines, err) = export(home.path(), &["--session", "review-only"]);
    assert_eq!(c, 0, "{err}");
    assert!(lines.is_empty());
    assert!(err.contains("harness_only_session=1"), "{err}");
    let (c, lines, err) = export(
        home.path(),
        &["--session", "terse", "--min-reply-chars", "3"],
    );
    assert_eq!(c, 0, "{err}");
    assert!(lines.is_empty());
    assert!(err.contains("short_reply=1"), "{err}");
    let (_, lines, _) = export(home.path(), &["--session", "terse"]);
    assert_eq!(lines.len(), 1, "off by default");
}

#[test]
fn a_dry_run_writes_nothing_and_reports_tokens() {
    let home = fixture_home(VERSIONS[0]);
    let work = tempfile::tempdir().unwrap();
    let out_dir = work.path().join("never");
    let state = work.path().join("state.json");
    let before = stores_of(home.path());
    for extra in [
        &[][..],
        &["--format", "dpo"],
        &["--tokenizer", &tokenizer_dir()],
    ] {
        let mut args = vec!["export", "--dry-run", "--out"];
        let dir = format!("{}/", out_dir.display());
        args.push(&dir);
        args.extend(["--state", state.to_str().unwrap()]);
        args.extend_from_slice(extra);
        let out = run_in(home.path(), &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(out.stdout.is_empty(), "stdout carries data only");
        assert!(err.contains("dry run: nothing was written"), "{err}");
        assert!(
            err.contains("tokens") && err.contains("trainable") && err.contains("longest"),
            "{err}"
        );
        assert!(err.contains("nexus") && err.contains("skipped"), "{err}");
        if extra.contains(&"dpo") {
            assert!(err.contains("regenerate"), "per signal: {err}");
        }
        if extra.contains(&"--tokenizer") {
            assert!(err.contains("tokens exact"), "{err}");
        }
    }
    // To stdout as well: nothing.
    let out = run_in(home.path(), &["export", "--dry-run"]);
    assert!(out.stdout.is_empty());
    assert!(!out_dir.exists(), "no output directory");
    let left: Vec<_> = std::fs::read_dir(work.path()).unwrap().collect();
    assert!(left.is_empty(), "no state, no lock: {left:?}");
    assert_eq!(stores_of(home.path()), before, "stores untouched");
}

/// `| name | n |` rows of the card's table that follows `heading`.
fn card_has(card: &str, name: &str, n: &Value) -> bool {
    card.contains(&format!("| {name} | {n} |"))
}

#[test]
fn the_dataset_card_matches_the_manifest_and_stays_current() {
    let home = fixture_home(VERSIONS[0]);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let dir = format!("{}/", out.display());
    let state = work.path().join("state.json");
    let cron = || {
        let o = run_in(
            home.path(),
            &["export", "--out", &dir, "--state", state.to_str().unwrap()],
        );
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let check = || {
        let card = String::from_utf8(read(&out.join("README.md"))).unwrap();
        let m: Value = serde_json::from_slice(&read(&out.join("manifest.json"))).unwrap();
        for (ch, n) in m["counts"]["channels"].as_object().unwrap() {
            assert!(card_has(&card, ch, n), "channel {ch}={n} not in\n{card}");
        }
        for (r, n) in m["counts"]["skipped"].as_object().unwrap() {
            assert!(card_has(&card, r, n), "skip {r}={n} not in\n{card}");
        }
        for (f, c) in m["split"]["files"].as_object().unwrap() {
            let lines = lines(&read(&out.join(f))).len();
            assert_eq!(c["lines"], lines);
            assert!(
                card.contains(&format!("| {f} | {lines} | {} |", c["bytes"])),
                "{card}"
            );
        }
        assert!(card.contains("mlx_lm.lora") && card.contains("SFTTrainer"));
        card
    };
    cron();
    let first = check();
    append_turn(
        &rusqlite::Connection::open(home.path().join("state.db")).unwrap(),
        "nexus-world-0001",
        "[perception] scene_change: a storm rolls over the card",
    );
    cron();
    let second = check();
    assert_ne!(first, second, "kept current");
}

#[test]
fn forget_removes_a_session_for_good() {
    let home = fixture_home(VERSIONS[0]);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let dir = format!("{}/", out.display());
    let state = work.path().join("state.json");
    let state_arg = state.to_str().unwrap();
    let cron = |extra: &[&str]| {
        let mut args = vec!["export", "--out", &dir, "--state", state_arg];
        args.extend_from_slice(extra);
        run_ok(home.path(), &args);
    };
    cron(&[]);
    let victim = "nexus-world-0001";
    let had = dir_lines(&out)
        .iter()
        .filter(|l| l["meta"]["session"] == victim)
        .count();
    assert!(had > 0);
    let stores = stores_of(home.path());

    // An unknown id is refused, and nothing changes.
    let before = (read(&out.join("train.jsonl")), read(&state));
    let o = run(&[
        "forget",
        "--out",
        &dir,
        "--state",
        state_arg,
        "no-such-session",
    ]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!((read(&out.join("train.jsonl")), read(&state)), before);

    let o = run(&["forget", "--out", &dir, "--state", state_arg, victim]);
    let listing = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let listed: usize = listing
        .lines()
        .map(|l| {
            l.split(": ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert_eq!(listed, had, "{listing}");
    assert_eq!(stores_of(home.path()), stores, "stores untouched");

    // A new turn in the forgotten session, an incremental run, then a full
    // one with that state into a fresh directory.
    append_turn(
        &rusqlite::Connection::open(home.path().join("state.db")).unwrap(),
        victim,
        "[perception] tick: after forgetting",
    );
    cron(&[]);
    for l in dir_lines(&out) {
        assert_ne!(l["meta"]["session"], victim, "{l}");
    }
    for f in ["train.jsonl", "valid.jsonl"] {
        if !out.join(f).exists() {
            continue; // a split without a line has no file
        }
        let o = run(&["validate", out.join(f).to_str().unwrap()]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{f}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let m: Value = serde_json::from_slice(&read(&out.join("manifest.json"))).unwrap();
    assert_eq!(m["curation"]["forgotten_sessions"], 1);
    let card = String::from_utf8(read(&out.join("README.md"))).unwrap();
    assert!(card.contains("sessions forgotten: 1"), "{card}");

    // A full run with that state (its outputs moved away) still leaves it out.
    std::fs::remove_dir_all(&out).unwrap();
    let mut st: Value = serde_json::from_slice(&read(&state)).unwrap();
    st["outputs"] = serde_json::json!({});
    st["watermark"] = 0.into();
    st["pending"] = serde_json::json!({});
    st["covered_turns"] = serde_json::json!({});
    st["forced_valid"] = serde_json::json!([]);
    st["forced_train"] = serde_json::json!([]);
    std::fs::write(&state, serde_json::to_vec(&st).unwrap()).unwrap();
    cron(&["--keep-duplicates"]);
    let all = dir_lines(&out);
    assert!(!all.is_empty());
    assert!(all.iter().all(|l| l["meta"]["session"] != victim));
    assert!(
        !user_texts(&all)
            .iter()
            .any(|t| t.contains("after forgetting"))
    );
}

#[test]
fn forget_before_a_time_and_by_force() {
    let home = fixture_home(VERSIONS[0]);
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("all.jsonl");
    let state = work.path().join("state.json");
    let (f, s) = (file.to_str().unwrap(), state.to_str().unwrap());
    let o = run_in(home.path(), &["export", "--out", f, "--state", s]);
    assert_eq!(o.status.code(), Some(0));
    let all = lines(&read(&file));
    let mut firsts: Vec<&str> = all
        .iter()
        .filter_map(|l| l["meta"]["first"].as_str())
        .collect();
    firsts.sort();
    let cut = firsts[firsts.len() / 2];
    let o = run(&[
        "forget",
        "--out",
        f,
        "--state",
        s,
        "--before",
        cut,
        "--force",
        "never-seen",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let left = lines(&read(&file));
    assert!(left.len() < all.len());
    assert!(
        left.iter()
            .all(|l| l["meta"]["first"].as_str().is_some_and(|t| t >= cut))
    );
    // The state still matches the file: the next run appends.
    let o = run_in(home.path(), &["export", "--out", f, "--state", s]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = run(&["validate", f]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let st: Value = serde_json::from_slice(&read(&state)).unwrap();
    assert_eq!(
        st["curation"]["forgotten"],
        serde_json::json!(["never-seen"])
    );
}

#[test]
fn sources_lists_the_models() {
    let home = fixture_home(VERSIONS[0]);
    let out = run_in(home.path(), &["sources", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let models = doc["state_db"]["models"].as_object().unwrap();
    assert!(!models.is_empty(), "{doc}");
    let text = String::from_utf8(run_in(home.path(), &["sources"]).stdout).unwrap();
    assert!(
        text.contains("models") && text.contains("--model"),
        "{text}"
    );
}

/// Sessions `nd-1`..`nd-n` of one exchange each, near duplicates of one
/// another (only the gate's number differs).
fn near_duplicate_sessions(home: &Path, n: usize) {
    let db = rusqlite::Connection::open(home.join("state.db")).unwrap();
    drop_fts_triggers(&db);
    for k in 1..=n {
        let (id, t) = (format!("nd-{k}"), 1_800_000_000 + 100 * k as i64);
        db.execute(
            "INSERT INTO sessions (id, source, started_at) VALUES (?1, 'cli', ?2)",
            rusqlite::params![id, t],
        )
        .unwrap();
        for (role, text, at) in [
            ("user", format!("How is gate {k} tonight?"), t + 1),
            ("assistant", format!("Gate {k} is calm tonight."), t + 2),
        ] {
            db.execute(
                "INSERT INTO messages (session_id, role, content, timestamp, finish_reason, active, compacted) VALUES (?1, ?2, ?3, ?4, 'stop', 1, 0)",
                rusqlite::params![id, role, text, at],
            )
            .unwrap();
        }
    }
}

fn gates(lines: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = user_texts(lines)
        .into_iter()
        .filter(|t| t.starts_with("How is gate"))
        .collect();
    v.sort();
    v
}

/// A copy the near-duplicate cap held back takes the place a forgotten
/// (or retracted) line leaves, as in a fresh export without that line.
#[test]
fn a_copy_the_cap_held_back_takes_the_place_a_forgotten_line_left() {
    let home = fixture_home(VERSIONS[0]);
    near_duplicate_sessions(home.path(), 5);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let dir = format!("{}/", out.display());
    let state = work.path().join("state.json");
    let flags = ["--near-duplicate-cap", "2", "--sft-context", "0"];
    let ids = |from: usize| {
        (from..=5)
            .map(|k| format!("nd-{k}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let night = || {
        let mut args = vec!["export", "--out", &dir, "--state", state.to_str().unwrap()];
        args.extend(flags);
        let all = ids(1);
        args.extend(["--session", &all]);
        let o = run_ok(home.path(), &args);
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    let forget = |id: &str| {
        let o = run(&[
            "forget",
            "--out",
            &dir,
            "--state",
            state.to_str().unwrap(),
            id,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let fresh = |from: usize| {
        let mut args = flags.to_vec();
        let some = ids(from);
        args.extend(["--session", &some]);
        let (c, lines, err) = export(home.path(), &args);
        assert_eq!(c, 0, "{err}");
        gates(&lines)
    };
    let check = || validates_with_state(&dir, &state);
    let err = night();
    assert!(err.contains("near_duplicate=3"), "{err}");
    assert_eq!(gates(&dir_lines(&out)), fresh(1));
    forget("nd-1");
    night();
    assert_eq!(gates(&dir_lines(&out)), fresh(2), "nd-3 takes nd-1's place");
    check();
    let err = night();
    assert!(err.contains("nothing new"), "{err}");
    forget("nd-2");
    night();
    assert_eq!(gates(&dir_lines(&out)), fresh(3), "nd-4 takes nd-2's place");
    check();
    forget("nd-3");
    night();
    assert_eq!(gates(&dir_lines(&out)), fresh(4), "nd-5 takes nd-3's place");
    check();
}
