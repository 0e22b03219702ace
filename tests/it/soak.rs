//! A month of nights: 30 simulated nightly runs of `export --out DIR/
//! --state S` on a copy of the 0.19 capture, with a Hermes-like writer
//! between nights (new turns and sessions, a compaction, a forget, a night
//! without state.db, a template that raises, a kill at each stall point,
//! the first night included). After every night that completes, the
//! directory is checked against a fresh full export of the same home with
//! the same forget list (`--sft-context 0 --near-duplicate-cap 0` on both
//! sides): the same training targets, no unit or answer in both splits, no
//! line moved between splits, train.jsonl not empty, and the manifest's
//! and card's figures equal to the files'.
//!
//! A regeneration (night 9) and an `/undo` (night 11) of answers exported
//! on earlier nights: the cumulative files retract them, as a fresh export
//! never holds them.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::common::*;
use crate::cron::{read, sql};

/// Noon UTC of the first simulated night's day (2026-11-26).
const DAY0: f64 = 1_796_126_400.0;
const FLAGS: [&str; 5] = ["--sft-context", "0", "--near-duplicate-cap", "0", "--quiet"];

/// `i` spelt in letters: exchanges that differ beyond their numbers.
pub(crate) fn word(i: usize) -> String {
    i.to_string()
        .bytes()
        .map(|b| char::from(b'a' + (b - b'0')))
        .collect()
}

/// One exchange in `session` at `t`, as Hermes writes it.
pub(crate) fn turn(home: &Path, session: &str, t: f64, text: &str) {
    sql(
        home,
        &format!(
            "INSERT INTO messages (session_id, role, content, timestamp, active, compacted) VALUES ('{session}', 'user', 'please {text}', {t}, 1, 0);
             INSERT INTO messages (session_id, role, content, timestamp, finish_reason, active, compacted) VALUES ('{session}', 'assistant', 'here is {text}, done', {}, 'stop', 1, 0);",
            t + 1.0
        ),
    );
}

pub(crate) fn session(home: &Path, id: &str, source: &str, t: f64, parent: Option<&str>) {
    let parent = parent.map_or("NULL".to_string(), |p| format!("'{p}'"));
    sql(
        home,
        &format!(
            "INSERT INTO sessions (id, source, started_at, parent_session_id) VALUES ('{id}', '{source}', {t}, {parent});"
        ),
    );
}

/// What Hermes does before night `n`.
fn write_day(home: &Path, n: usize) {
    let t = DAY0 + 86_400.0 * n as f64;
    let w = word(n);
    if n == 1 {
        // A burst of new sessions before the first night (so that the
        // first run passes the mid-output point).
        for k in 0..24 {
            let id = format!("burst-{}", word(k));
            session(home, &id, "cli", t - 600.0, None);
            turn(
                home,
                &id,
                t - 500.0 + k as f64,
                &format!("burst {}", word(k)),
            );
        }
    }
    turn(home, "nexus-world-0001", t, &format!("tick of night {w}"));
    let tg = format!("tg-night-{w}");
    session(home, &tg, "telegram", t + 10.0, None);
    turn(home, &tg, t + 20.0, &format!("telegram question {w}"));
    if n.is_multiple_of(2) {
        turn(
            home,
            "20261125_133300_554322",
            t + 30.0,
            &format!("cli step {w}"),
        );
    }
    if n == 9 {
        // The user regenerates the answer exported on night 2.
        let s = format!("tg-night-{}", word(2));
        sql(
            home,
            &format!(
                "INSERT INTO messages (session_id, role, content, timestamp, active, compacted) VALUES ('{s}', 'user', 'please telegram question {}', {}, 1, 0);
                 INSERT INTO messages (session_id, role, content, timestamp, finish_reason, active, compacted) VALUES ('{s}', 'assistant', 'a better answer, {}', {}, 'stop', 1, 0);",
                word(2), t + 60.0, word(2), t + 61.0
            ),
        );
    }
    if n == 11 {
        // /undo of the turn exported on night 5, then the user goes on.
        let s = format!("tg-night-{}", word(5));
        sql(
            home,
            &format!("UPDATE messages SET active = 0 WHERE session_id = '{s}';"),
        );
        turn(home, &s, t + 70.0, &format!("after the undo {w}"));
    }
    if n == 12 {
        // A compaction: the session ends by compression and goes on in a
        // child that carries its later turns.
        let parent = format!("tg-night-{}", word(10));
        sql(
            home,
            &format!(
                "UPDATE sessions SET end_reason = 'compression', ended_at = {t} WHERE id = '{parent}';"
            ),
        );
        let child = format!("{parent}-c");
        session(home, &child, "telegram", t + 40.0, Some(&parent));
        turn(home, &child, t + 50.0, &format!("after compaction {w}"));
    }
}

struct Soak {
    home: tempfile::TempDir,
    work: tempfile::TempDir,
    forgotten: Vec<String>,
    /// Every line each split ever held (none may move to the other).
    seen: BTreeMap<String, &'static str>,
}

impl Soak {
    fn dir(&self) -> PathBuf {
        self.work.path().join("out")
    }
    fn state(&self) -> PathBuf {
        self.work.path().join("state.json")
    }

    fn cmd(&self, args: &[&str], stall: Option<&str>) -> Command {
        let mut c = Command::new(bin());
        c.args(args).env_remove("HERMES_HOME");
        if args[0] == "export" {
            c.args(["--hermes-home", self.home.path().to_str().unwrap()]);
        }
        if let Some(p) = stall {
            c.env("HERMES_HARVEST_STALL_AT", p);
        }
        c
    }

    fn night_args(&self) -> Vec<String> {
        let mut v: Vec<String> = [
            "export",
            "--out",
            &format!("{}/", self.dir().display()),
            "--state",
            self.state().to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(FLAGS.iter().map(|s| s.to_string()));
        v
    }

    fn night(&self, extra: &[&str]) -> std::process::Output {
        let mut args = self.night_args();
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.cmd(&args, None).output().unwrap()
    }

    /// Runs `args` until it stalls at `point`, then kills it.
    fn kill_at(&self, args: &[&str], point: &str) {
        let mut child = self
            .cmd(args, Some(point))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stderr.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.contains(&format!("stalled at {point}")),
            "{point}: {line}"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn kill_night_at(&self, point: &str) {
        let args = self.night_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.kill_at(&args, point);
    }

    /// A fresh full export of the home with the same forget list.
    fn fresh(&self, n: usize) -> PathBuf {
        let base = self.work.path().join(format!("fresh-{n}"));
        let state = base.join("state.json");
        std::fs::create_dir_all(&base).unwrap();
        let st = serde_json::json!({
            "version": 4, "watermark": 0,
            "curation": {"forgotten": self.forgotten},
        });
        std::fs::write(&state, st.to_string()).unwrap();
        let dir = base.join("out");
        let mut args = vec![
            "export".to_string(),
            "--out".into(),
            format!("{}/", dir.display()),
            "--state".into(),
            state.to_str().unwrap().into(),
        ];
        args.extend(FLAGS.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.cmd(&args, None).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    }

    /// Checks the directory after night `n` completed.
    fn check(&mut self, n: usize) {
        let dir = self.dir();
        let (train, valid) = (split_lines(&dir, "train"), split_lines(&dir, "valid"));
        assert!(!train.is_empty(), "night {n}: train.jsonl is empty");
        // The same training targets as a fresh export, none doubled.
        let fresh = self.fresh(n);
        let mut ours = targets(&train);
        ours.extend(targets(&valid));
        let mut theirs = targets(&split_lines(&fresh, "train"));
        theirs.extend(targets(&split_lines(&fresh, "valid")));
        ours.sort();
        theirs.sort();
        assert_eq!(
            ours, theirs,
            "night {n}: the targets differ from a fresh export"
        );
        // No unit and no answer in both splits.
        let units = |v: &[Value]| -> BTreeSet<String> {
            v.iter()
                .map(|l| l["meta"]["unit"].as_str().unwrap().to_string())
                .collect()
        };
        let both: Vec<String> = units(&train)
            .intersection(&units(&valid))
            .cloned()
            .collect();
        assert!(both.is_empty(), "night {n}: units in both splits: {both:?}");
        let answers = |v: &[Value]| -> BTreeSet<String> { targets(v).into_iter().collect() };
        let both: Vec<String> = answers(&train)
            .intersection(&answers(&valid))
            .cloned()
            .collect();
        assert!(
            both.is_empty(),
            "night {n}: answers in both splits: {both:?}"
        );
        // No line ever moves between the splits.
        for (side, lines) in [("train", &train), ("valid", &valid)] {
            for l in lines {
                let key = l.to_string();
                let was = *self.seen.entry(key).or_insert(side);
                assert_eq!(
                    was, side,
                    "night {n}: a line moved from {was} to {side}: {l}"
                );
            }
        }
        // The manifest and the card say what the files hold.
        let m: Value = serde_json::from_slice(&read(&dir.join("manifest.json"))).unwrap();
        let d = &m["dataset"];
        assert_eq!(d["lines"]["train.jsonl"], train.len(), "night {n}");
        assert_eq!(d["lines"]["valid.jsonl"], valid.len(), "night {n}");
        let per_channel: u64 = d["samples"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(
            per_channel as usize,
            train.len() + valid.len(),
            "night {n}: {d}"
        );
        let mut by_channel: BTreeMap<String, u64> = BTreeMap::new();
        for l in train.iter().chain(&valid) {
            *by_channel
                .entry(l["meta"]["channel"].as_str().unwrap().into())
                .or_default() += 1;
        }
        let said: BTreeMap<String, u64> = serde_json::from_value(d["samples"].clone()).unwrap();
        let said: BTreeMap<String, u64> = said.into_iter().filter(|(_, v)| *v > 0).collect();
        assert_eq!(said, by_channel, "night {n}");
        let card = String::from_utf8(read(&dir.join("README.md"))).unwrap();
        let first = d["time_range"]["first"].as_str().unwrap();
        assert!(
            card.contains(&format!("Turns from {first}")),
            "night {n}: {card}"
        );
        assert!(
            card.contains(&format!("| train.jsonl | {} |", train.len())),
            "night {n}: {card}"
        );
        self.validated(n, &m, &[&train, &valid]);
    }

    /// `validate DIR/ --state S` passes after night `n`, and the manifest's
    /// and card's cumulative figures (tokens per channel, time range) are
    /// what the `lines` of the splits hold.
    fn validated(&self, n: usize, m: &Value, splits: &[&Vec<Value>]) {
        let dir = format!("{}/", self.dir().display());
        let state = self.state();
        let args = ["validate", dir.as_str(), "--state", state.to_str().unwrap()];
        let out = self.cmd(&args, None).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "night {n}: validate DIR/: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let d = &m["dataset"];
        let all = || splits.iter().flat_map(|s| s.iter());
        let mut per_channel: BTreeMap<String, u64> = BTreeMap::new();
        for l in all() {
            *per_channel
                .entry(l["meta"]["channel"].as_str().unwrap().into())
                .or_default() += 1;
        }
        for (channel, lines) in &per_channel {
            let t = &d["tokens"][channel];
            assert_eq!(t["samples"], *lines, "night {n}: {channel}: {d}");
            let (total, trainable) = (t["total"].as_u64(), t["trainable"].as_u64());
            assert!(
                trainable.unwrap() > 0 && trainable < total,
                "night {n}: {channel}: {d}"
            );
        }
        assert_eq!(d["tokens"].as_object().unwrap().len(), per_channel.len());
        let times = |k: &'static str| all().filter_map(move |l| l["meta"][k].as_str());
        let first = times("first").min();
        let last = times("last").chain(times("first")).max();
        assert_eq!(d["time_range"]["first"].as_str(), first, "night {n}");
        assert_eq!(d["time_range"]["last"].as_str(), last, "night {n}");
        let card = String::from_utf8(read(&self.dir().join("README.md"))).unwrap();
        for (channel, t) in d["tokens"].as_object().unwrap() {
            let row = format!(
                "| {channel} | {} | {} | {} |",
                t["samples"], t["total"], t["trainable"]
            );
            assert!(card.contains(&row), "night {n}: {row} not in the card");
        }
    }
}

fn split_lines(dir: &Path, split: &str) -> Vec<Value> {
    lines(&read(&dir.join(format!("{split}.jsonl"))))
}

/// A tokenizer whose template raises on the marker of night 21's turns.
fn raising_tokenizer(work: &Path) -> PathBuf {
    let dir = work.join("raising");
    std::fs::create_dir_all(&dir).unwrap();
    let src = repo().join("fixtures/tokenizer/chatml");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let template = std::fs::read_to_string(src.join("chat_template.jinja")).unwrap();
    std::fs::write(
        dir.join("chat_template.jinja"),
        format!(
            "{{%- for m in messages %}}{{%- if m.content is string and 'night cb' in m.content %}}{{{{ raise_exception('no such night') }}}}{{%- endif %}}{{%- endfor %}}\n{template}"
        ),
    )
    .unwrap();
    dir
}

#[test]
fn a_month_of_nights_matches_a_fresh_export_every_morning() {
    let home = fixture_home(VERSIONS[0]);
    let db = rusqlite::Connection::open(home.path().join("state.db")).unwrap();
    drop_fts_triggers(&db);
    drop(db);
    let mut soak = Soak {
        home,
        work: tempfile::tempdir().unwrap(),
        forgotten: Vec::new(),
        seen: BTreeMap::new(),
    };
    let kills: BTreeMap<usize, &str> = [
        (1, "mid-output"),
        (4, "outputs-committed"),
        (7, "before-state"),
    ]
    .into();
    let raising = raising_tokenizer(soak.work.path());
    for n in 1..=30 {
        write_day(soak.home.path(), n);
        if let Some(point) = kills.get(&n) {
            // Killed; the next run (this night's retry) finishes it.
            soak.kill_night_at(point);
        }
        if n == 15 {
            // Forget a session, killed once its journal is saved: the
            // night's export finishes it.
            let victim = format!("tg-night-{}", word(3));
            let dir = format!("{}/", soak.dir().display());
            let state = soak.state();
            soak.kill_at(
                &[
                    "forget",
                    "--out",
                    &dir,
                    "--state",
                    state.to_str().unwrap(),
                    "--quiet",
                    &victim,
                ],
                "forget-journal",
            );
            soak.forgotten.push(victim);
        }
        if n == 18 {
            // state.db is away for a night: nothing exported, state kept.
            let db = soak.home.path().join("state.db");
            let away = soak.work.path().join("state.db.away");
            std::fs::rename(&db, &away).unwrap();
            let before = (read(&soak.state()), read(&soak.dir().join("train.jsonl")));
            let out = soak.night(&[]);
            assert_eq!(
                out.status.code(),
                Some(3),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                (read(&soak.state()), read(&soak.dir().join("train.jsonl"))),
                before
            );
            std::fs::rename(&away, &db).unwrap();
            continue; // checked after the night it returns
        }
        if n == 21 {
            // The template raises on this night's nexus turn ("night cb"):
            // its session stays pending, exit 3.
            let tok = raising.to_str().unwrap().to_string();
            let out = soak.night(&["--tokenizer", &tok]);
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert_eq!(out.status.code(), Some(3), "{err}");
            continue; // checked after the next night takes it
        }
        let out = soak.night(&[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "night {n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        soak.check(n);
    }
    // The regenerated and the undone answer were retracted, and said so.
    let m: Value = serde_json::from_slice(&read(&soak.dir().join("manifest.json"))).unwrap();
    assert_eq!(m["dataset"]["retracted_lines"], 2, "{}", m["dataset"]);
}
