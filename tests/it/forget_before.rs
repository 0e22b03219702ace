//! `forget --before` with a cut that falls inside a multi-turn line: the
//! line goes, and the next export writes its turns from the cut on again,
//! once each, without context from before the cut; the near-duplicate
//! keys of the removed lines leave the state. Checked against a fresh
//! export with the same cut-off. A DPO pair after a cut carries no
//! history from before it.

use std::path::Path;

use serde_json::Value;

use crate::common::*;
use crate::cron::{dir_lines, read};
use crate::soak::{session, turn};

/// Well after every turn of the fixture captures.
const T0: f64 = 1_950_000_000.0;
/// The cut: between the second and the third turn of `cut-span`.
const CUT: f64 = T0 + 150.0;

fn iso(t: f64) -> String {
    chrono::DateTime::from_timestamp(t as i64, 0)
        .unwrap()
        .to_rfc3339()
}

/// The contents of every message of a role, sorted.
fn contents(lines: &[Value], role: &str) -> Vec<String> {
    let mut out: Vec<String> = lines
        .iter()
        .flat_map(|l| l["messages"].as_array().unwrap().clone())
        .filter(|m| m["role"] == role)
        .filter_map(|m| m["content"].as_str().map(str::to_owned))
        .collect();
    out.sort();
    out
}

fn ok(o: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(0), "{err}");
    err
}

/// A fresh export of `home` into `base/fresh/` whose state holds only the
/// cut-off `cut`.
fn fresh(home: &Path, base: &Path, cut: f64, flags: &[&str]) -> Vec<Value> {
    let state = base.join("fresh-state.json");
    let st =
        serde_json::json!({"version": 4, "watermark": 0, "curation": {"forgotten_before": cut}});
    std::fs::write(&state, st.to_string()).unwrap();
    let dir = format!("{}/", base.join("fresh").display());
    let args = [
        &["export", "--out", &dir, "--state", state.to_str().unwrap()],
        flags,
    ]
    .concat();
    ok(&run_in(home, &args));
    dir_lines(&base.join("fresh"))
}

fn cut_inside_a_line(flags: &[&str]) {
    let home = fixture_home(VERSIONS[0]);
    let h = home.path();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let dir = format!("{}/", out.display());
    let state = work.path().join("state.json");
    let s = state.to_str().unwrap();
    for id in ["cut-span", "cut-leak", "cut-ticks"] {
        session(h, id, "telegram", T0 - 10.0, None);
    }
    for (k, w) in ["a", "b", "c", "d"].iter().enumerate() {
        turn(h, "cut-span", T0 + 100.0 * k as f64, &format!("span {w}"));
    }
    turn(h, "cut-leak", T0 + 50.0, "leak a");
    // Near duplicates of each other (their numbers are masked), up to the
    // default cap, all before the cut.
    for k in 1..=3 {
        turn(h, "cut-ticks", T0 + 10.0 * k as f64, &format!("tick {k}"));
    }
    let export = || {
        ok(&run_in(
            h,
            &[&["export", "--out", &dir, "--state", s], flags].concat(),
        ))
    };
    export();
    let span: Vec<Value> = dir_lines(&out)
        .into_iter()
        .filter(|l| l["meta"]["session"] == "cut-span")
        .collect();
    assert_eq!(span.len(), 1, "one line of four turns: {span:?}");
    assert_eq!(contents(&span, "assistant").len(), 4);
    let (first, last) = (&span[0]["meta"]["first"], &span[0]["meta"]["last"]);
    assert!(first.as_str() < Some(&iso(CUT)[..]) && last.as_str() > Some(&iso(CUT)[..]));

    // The dry run says what goes and what is written again, and changes nothing.
    let files = (
        read(&out.join("train.jsonl")),
        read(&out.join("valid.jsonl")),
    );
    let saved = read(&state);
    let forget = |extra: &[&str]| {
        let args = [
            &["forget", "--out", &dir, "--state", s, "--before", &iso(CUT)],
            extra,
        ];
        ok(&run(&args.concat()))
    };
    let said = forget(&["--dry-run"]);
    assert!(
        said.contains(
            "; 1 of them held turns from the cut on (2 turn(s)), which the next export would write again"
        ),
        "{said}"
    );
    let now = (
        read(&out.join("train.jsonl")),
        read(&out.join("valid.jsonl")),
    );
    assert_eq!((now, read(&state)), (files, saved));
    let said = forget(&[]);
    assert!(
        said.contains(
            "; 1 of them held turns from the cut on (2 turn(s)), which the next export writes again"
        ),
        "{said}"
    );
    assert!(
        dir_lines(&out).is_empty(),
        "every line began before the cut"
    );
    let st: Value = serde_json::from_slice(&read(&state)).unwrap();
    assert!(
        st["curation"]["near"].is_null(),
        "near keys left: {}",
        st["curation"]
    );
    assert!(st["curation"]["exact"].is_null(), "{}", st["curation"]);

    // Later turns, then the next night.
    turn(h, "cut-span", T0 + 400.0, "span e");
    turn(h, "cut-leak", T0 + 500.0, "leak b");
    for k in 4..=6 {
        turn(h, "cut-ticks", T0 + 600.0 + k as f64, &format!("tick {k}"));
    }
    export();
    let after = dir_lines(&out);
    let st: Value = serde_json::from_slice(&read(&state)).unwrap();
    assert!(
        st["reopened"].is_null(),
        "every reopened turn was taken: {}",
        st["reopened"]
    );

    // (a) Every target from the cut on, once.
    let answers = contents(&after, "assistant");
    let mut want: Vec<String> = [
        "span c", "span d", "span e", "leak b", "tick 4", "tick 5", "tick 6",
    ]
    .iter()
    .map(|t| format!("here is {t}, done"))
    .collect();
    want.sort();
    assert_eq!(answers, want, "{after:?}");
    // (b) Nothing from before the cut, as a target or as context.
    let users = contents(&after, "user").join("\n");
    for early in ["span a", "span b", "leak a", "tick 1", "tick 2", "tick 3"] {
        assert!(!users.contains(early), "{early} is back: {users}");
    }
    assert!(
        after
            .iter()
            .all(|l| l["meta"]["first"].as_str() >= Some(&iso(CUT)[..]))
    );
    // (c) The directory and its state agree.
    validates_with_state(&dir, &state);
    // The same as a fresh export with the same cut-off.
    let fresh = fresh(h, work.path(), CUT, flags);
    assert_eq!(contents(&fresh, "assistant"), answers);
    assert_eq!(contents(&fresh, "user"), contents(&after, "user"));
}

#[test]
fn forget_before_writes_the_later_turns_of_a_line_again() {
    cut_inside_a_line(&["--quiet"]);
}

#[test]
fn forget_before_writes_them_again_without_context_or_cap() {
    cut_inside_a_line(&["--sft-context", "0", "--near-duplicate-cap", "0", "--quiet"]);
}

#[test]
fn forget_before_inside_a_captured_line_matches_a_fresh_export() {
    const FLAGS: [&str; 5] = ["--sft-context", "0", "--near-duplicate-cap", "0", "--quiet"];
    for version in VERSIONS {
        let home = fixture_home(version);
        let work = tempfile::tempdir().unwrap();
        let out = work.path().join("out");
        let dir = format!("{}/", out.display());
        let state = work.path().join("state.json");
        let s = state.to_str().unwrap();
        let export = || {
            ok(&run_in(
                home.path(),
                &[&["export", "--out", &dir, "--state", s], &FLAGS[..]].concat(),
            ))
        };
        export();
        // The cut: the last turn of a line that began earlier.
        let mut lasts: Vec<String> = dir_lines(&out)
            .iter()
            .filter(|l| l["meta"]["first"].as_str() < l["meta"]["last"].as_str())
            .map(|l| l["meta"]["last"].as_str().unwrap().to_string())
            .collect();
        lasts.sort();
        assert!(!lasts.is_empty(), "{version}: no line of several turns");
        let cut = lasts[lasts.len() / 2].clone();
        let args = ["forget", "--out", &dir, "--state", s, "--before", &cut];
        let said = ok(&run(&args));
        assert!(!said.contains("; 0 of them held"), "{version}: {said}");
        // One user message per exchange (`--sft-context 0`).
        let kept = contents(&dir_lines(&out), "user").len();
        export();
        let ours = dir_lines(&out);
        // The summary counted the turns written again.
        let again = said
            .split(" turn(s)")
            .next()
            .unwrap()
            .rsplit('(')
            .next()
            .unwrap();
        assert_eq!(
            again.parse::<usize>().unwrap(),
            contents(&ours, "user").len() - kept,
            "{version}: {said}"
        );
        let v = run(&["validate", &dir, "--state", s]);
        assert_eq!(v.status.code(), Some(0), "{version}: {v:?}");
        // A fresh export with the same cut-off.
        let t = chrono::DateTime::parse_from_rfc3339(&cut)
            .unwrap()
            .timestamp();
        let fresh = fresh(home.path(), work.path(), t as f64, &FLAGS);
        assert!(!fresh.is_empty(), "{version}");
        assert_eq!(targets(&ours), targets(&fresh), "{version}");
        // Lines without a time hold turns timed by their session's start
        // (after the cut), as in the fresh export.
        let first = |l: &Value| l["meta"]["first"].as_str().map(str::to_owned);
        assert!(ours.iter().all(|l| first(l).is_none_or(|f| f >= cut)));
    }
}

#[test]
fn a_pair_after_the_cut_carries_no_history_from_before_it() {
    let home = fixture_home(VERSIONS[0]);
    let h = home.path();
    session(h, "dpo-cut", "telegram", T0 - 10.0, None);
    turn(h, "dpo-cut", T0, "dpo early");
    turn(h, "dpo-cut", T0 + 200.0, "dpo late");
    // The user regenerates the answer after the cut.
    crate::cron::sql(
        h,
        &format!(
            "INSERT INTO messages (session_id, role, content, timestamp, active, compacted) VALUES ('dpo-cut', 'user', 'please dpo late', {}, 1, 0);
             INSERT INTO messages (session_id, role, content, timestamp, finish_reason, active, compacted) VALUES ('dpo-cut', 'assistant', 'a better answer to dpo late', {}, 'stop', 1, 0);",
            T0 + 260.0,
            T0 + 261.0
        ),
    );
    let work = tempfile::tempdir().unwrap();
    let pairs = |cut: Option<f64>| {
        let state = work.path().join(format!("{cut:?}.json"));
        let st = serde_json::json!({"version": 4, "watermark": 0, "curation": {"forgotten_before": cut}});
        std::fs::write(&state, st.to_string()).unwrap();
        let file = work.path().join(format!("{cut:?}.jsonl"));
        let (f, s) = (file.to_str().unwrap(), state.to_str().unwrap());
        ok(&run_in(
            h,
            &[
                "export", "--format", "dpo", "--out", f, "--state", s, "--quiet",
            ],
        ));
        let all = lines(&read(&file));
        all.into_iter()
            .filter(|l| l["meta"]["session"] == "dpo-cut")
            .map(|l| l.to_string())
            .collect::<Vec<String>>()
    };
    // Without a cut the pair's history holds the early turn; with one it does not.
    let uncut = pairs(None);
    assert!(uncut.iter().any(|l| l.contains("dpo early")), "{uncut:?}");
    let cut = pairs(Some(T0 + 100.0));
    assert!(
        !cut.is_empty() && cut.iter().all(|l| !l.contains("dpo early")),
        "{cut:?}"
    );
}
