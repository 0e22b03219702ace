//! Token counts and renderings against golden values that Python
//! transformers' `apply_chat_template` produced on the same tokenizer
//! directories (`scripts/tokenizer.sh golden`; versions in counts.json).

use hermes_harvest::tokens::family::Family;
use hermes_harvest::tokens::{Counter, Estimate};
use serde_json::Value;

use crate::common::repo;

fn golden() -> (Vec<Value>, Vec<Value>) {
    let dir = repo().join("fixtures/tokenizer/golden");
    let samples: Vec<Value> = std::fs::read_to_string(dir.join("samples.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let counts: Value =
        serde_json::from_slice(&std::fs::read(dir.join("counts.json")).unwrap()).unwrap();
    (samples, counts["samples"].as_array().unwrap().clone())
}

fn parts(line: &Value) -> (Vec<Value>, Option<Vec<Value>>) {
    (
        line["messages"].as_array().unwrap().clone(),
        line.get("tools").and_then(Value::as_array).cloned(),
    )
}

#[test]
fn renderings_and_counts_match_transformers_in_both_layouts() {
    let (samples, counts) = golden();
    assert!(samples.len() >= 20);
    for layout in ["chatml", "chatml-config"] {
        let mut counter =
            Counter::new(Some(&repo().join("fixtures/tokenizer").join(layout))).unwrap();
        for g in &counts {
            let n = g["line"].as_u64().unwrap() as usize;
            let (messages, tools) = parts(&samples[n - 1]);
            let rendered = counter
                .render_json(&messages, tools.as_deref())
                .unwrap()
                .unwrap();
            let want = std::fs::read_to_string(
                repo().join(format!("fixtures/tokenizer/golden/rendered/{n}.txt")),
            )
            .unwrap();
            assert_eq!(rendered, want, "{layout}: rendering of line {n}");
            let c = counter.count_json(&messages, tools.as_deref()).unwrap();
            assert_eq!(
                c.total as u64,
                g["tokens"].as_u64().unwrap(),
                "{layout}: tokens of line {n}"
            );
            assert_eq!(
                c.trainable as u64,
                g["assistant_tokens"].as_u64().unwrap(),
                "{layout}: assistant tokens of line {n}"
            );
        }
    }
}

#[test]
fn a_tokenizer_json_path_works_like_its_directory() {
    let (samples, counts) = golden();
    let mut counter = Counter::new(Some(
        &repo().join("fixtures/tokenizer/chatml/tokenizer.json"),
    ))
    .unwrap();
    let g = &counts[0];
    let (messages, tools) = parts(&samples[0]);
    let c = counter.count_json(&messages, tools.as_deref()).unwrap();
    assert_eq!(c.total as u64, g["tokens"].as_u64().unwrap());
}

#[test]
fn the_estimate_never_counts_fewer_tokens_than_the_tokenizer() {
    let (samples, counts) = golden();
    let mut estimate = Counter::new(None).unwrap();
    for g in &counts {
        let n = g["line"].as_u64().unwrap() as usize;
        let (messages, tools) = parts(&samples[n - 1]);
        let e = estimate.count_json(&messages, tools.as_deref()).unwrap();
        let real = g["tokens"].as_u64().unwrap() as usize;
        assert!(
            e.total >= real,
            "line {n}: estimate {} < {real} real tokens",
            e.total
        );
        assert!(
            e.total <= real * 2,
            "line {n}: estimate {} is more than twice {real}",
            e.total
        );
    }
    assert!(Estimate::system("") > 0);
}

#[test]
fn the_fast_byte_level_counter_agrees_with_the_tokenizers_crate() {
    let path = repo().join("fixtures/tokenizer/chatml/tokenizer.json");
    let json: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut fast = hermes_harvest::tokens::bpe::FastBpe::from_json(&json)
        .expect("a byte-level BPE tokenizer is handled");
    let crate_tok = tokenizers::Tokenizer::from_file(&path).unwrap();
    let dir = repo().join("fixtures/tokenizer/golden/rendered");
    let mut checked = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        // Pieces between special tokens, as the counter sees them.
        for piece in text.split(['\u{0}']).flat_map(|t| t.split("<|im_start|>")) {
            for piece in piece.split("<|im_end|>") {
                let want = crate_tok.encode(piece, false).unwrap().len();
                if let Some(n) = fast.count(piece) {
                    assert_eq!(n, want, "{piece:?}");
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 100);
    // Unusual text: numbers, contractions, whitespace runs, non-ASCII.
    for s in [
        "it's 12,345.67 — naïve café ☕ 😀\n\n\t  x",
        "  leading and trailing  ",
        "don't WON'T y'all'll",
        "a  b   c\n\n\nd \n e\t\tf",
        "\n\nx  ",
        " \t x\u{3000}\u{3000}y\u{a0}z",
        "{\"todos\": [{\"id\": \"1\"}]}\n\n  ",
        "",
    ] {
        assert_eq!(
            fast.count(s),
            Some(crate_tok.encode(s, false).unwrap().len()),
            "{s:?}"
        );
    }
    // A word too long for the fast path is left to the crate.
    assert_eq!(fast.count(&"x".repeat(10_000)), None);
    // A configuration it does not reproduce is not claimed.
    let mut other = json.clone();
    other["normalizer"] = serde_json::json!({"type": "NFC"});
    assert!(hermes_harvest::tokens::bpe::FastBpe::from_json(&other).is_none());
}

/// A model directory with the fixture tokenizer and the ChatML template
/// without its generation tags (`fixtures/tokenizer/chatml-nogen.jinja`).
pub fn nogen_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = repo().join("fixtures/tokenizer/chatml");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    std::fs::copy(
        repo().join("fixtures/tokenizer/chatml-nogen.jinja"),
        dir.path().join("chat_template.jinja"),
    )
    .unwrap();
    dir
}

#[test]
fn without_generation_blocks_trainable_tokens_are_the_prefix_difference_transformers_gives() {
    let (samples, _) = golden();
    let want: Value = serde_json::from_slice(
        &std::fs::read(repo().join("fixtures/tokenizer/golden/prefix-diff.json")).unwrap(),
    )
    .unwrap();
    let want = want["samples"].as_array().unwrap();
    assert_eq!(want.len(), samples.len());
    let dir = nogen_dir();
    let mut counter = Counter::new(Some(dir.path())).unwrap();
    let mut marked = Counter::new(Some(&repo().join("fixtures/tokenizer/chatml"))).unwrap();
    for (n, (sample, g)) in samples.iter().zip(want).enumerate() {
        let (messages, tools) = parts(sample);
        let c = counter.count_json(&messages, tools.as_deref()).unwrap();
        let line = n + 1;
        assert_eq!(c.total as u64, g["tokens"].as_u64().unwrap(), "line {line}");
        assert_eq!(
            c.trainable as u64,
            g["trainable"].as_u64().unwrap(),
            "trainable of line {line}"
        );
        assert_eq!(
            c.last_turn as u64,
            g["last_turn"].as_u64().unwrap(),
            "last turn of line {line}"
        );
        // With the generation blocks the last turn is found the same way.
        let m = marked.count_json(&messages, tools.as_deref()).unwrap();
        assert_eq!(m.last_turn, c.last_turn, "line {line}");
        assert!(m.trainable > 0 && m.trainable <= c.trainable, "line {line}");
    }
}

#[test]
fn without_the_last_turn_only_generation_block_templates_leave_it_at_zero() {
    let (samples, _) = golden();
    let nogen = nogen_dir();
    for (dir, blocks) in [
        (repo().join("fixtures/tokenizer/chatml"), true),
        (nogen.path().to_path_buf(), false),
    ] {
        let mut with = Counter::new(Some(&dir)).unwrap();
        let mut without = Counter::new(Some(&dir)).unwrap();
        without.without_last_turn();
        for (n, sample) in samples.iter().enumerate() {
            let (messages, tools) = parts(sample);
            let a = with.count_json(&messages, tools.as_deref()).unwrap();
            let b = without.count_json(&messages, tools.as_deref()).unwrap();
            assert!(a.last_turn > 0, "line {}", n + 1);
            assert_eq!(
                (b.total, b.trainable),
                (a.total, a.trainable),
                "line {}",
                n + 1
            );
            let last = if blocks { 0 } else { a.last_turn };
            assert_eq!(b.last_turn, last, "line {} ({dir:?})", n + 1);
        }
    }
}

/// Runs the binary with `envs` set (and every Hugging Face location
/// variable cleared first).
fn run_env(args: &[&str], envs: &[(&str, &std::path::Path)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(crate::common::bin());
    cmd.args(args).env_remove("HERMES_HOME");
    for k in [
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_HOME",
        "XDG_CACHE_HOME",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// A Hugging Face cache holding the fixture tokenizer as `Org/Chat-Fixture`:
/// `models--Org--Chat-Fixture/{blobs,refs/main,snapshots/REV/}`, the
/// snapshot's files links into `blobs/`, an older snapshot beside it.
fn hf_cache(root: &std::path::Path) {
    let repo = root.join("models--Org--Chat-Fixture");
    let src = repo_dir();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    let rev = "0123456789abcdef0123456789abcdef01234567";
    std::fs::write(repo.join("refs/main"), rev).unwrap();
    let snap = repo.join("snapshots").join(rev);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("snapshots/old")).unwrap();
    for (k, f) in [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ]
    .iter()
    .enumerate()
    {
        let blob = format!("blob{k}");
        std::fs::copy(src.join(f), repo.join("blobs").join(&blob)).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/{blob}"), snap.join(f)).unwrap();
    }
}

fn repo_dir() -> std::path::PathBuf {
    repo().join("fixtures/tokenizer/chatml")
}

#[test]
fn a_model_id_resolves_in_the_hugging_face_cache_like_its_directory() {
    let home = crate::common::fixture_home(crate::common::VERSIONS[0]);
    let cache = tempfile::tempdir().unwrap();
    hf_cache(&cache.path().join("hub"));
    let h = home.path().to_str().unwrap();
    let by_dir = run_env(
        &[
            "export",
            "--hermes-home",
            h,
            "--tokenizer",
            repo_dir().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(by_dir.status.code(), Some(0));
    assert!(!by_dir.stdout.is_empty());
    let id_args = [
        "export",
        "--hermes-home",
        h,
        "--tokenizer",
        "Org/Chat-Fixture",
    ];
    let hub = cache.path().join("hub");
    for envs in [
        vec![("HF_HUB_CACHE", hub.as_path())],
        vec![("HF_HOME", cache.path())],
    ] {
        let by_id = run_env(&id_args, &envs);
        let err = String::from_utf8_lossy(&by_id.stderr);
        assert_eq!(by_id.status.code(), Some(0), "{err}");
        assert!(
            by_id.stdout == by_dir.stdout,
            "same bytes by id and by directory"
        );
    }
    // XDG_CACHE_HOME/huggingface/hub, then HOME/.cache/huggingface/hub.
    let xdg = tempfile::tempdir().unwrap();
    hf_cache(&xdg.path().join("huggingface/hub"));
    let by_id = run_env(&id_args, &[("XDG_CACHE_HOME", xdg.path())]);
    assert!(by_id.stdout == by_dir.stdout);
    let fake_home = tempfile::tempdir().unwrap();
    hf_cache(&fake_home.path().join(".cache/huggingface/hub"));
    let by_id = run_env(&id_args, &[("HOME", fake_home.path())]);
    assert!(by_id.stdout == by_dir.stdout);
    // `sources` names the model Hermes serves and finds its tokenizer.
    let config = home.path().join("config.yaml");
    let yaml = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        yaml.replace("default: fake-model-1", "default: Org/Chat-Fixture"),
    )
    .unwrap();
    let sources = run_env(
        &["sources", "--hermes-home", h],
        &[("HF_HUB_CACHE", hub.as_path())],
    );
    let text = String::from_utf8_lossy(&sources.stdout);
    assert!(
        text.contains("Org/Chat-Fixture (config.yaml); its tokenizer is cached"),
        "{text}"
    );
    let sources = run_env(&["sources", "--hermes-home", h, "--json"], &[]);
    let doc: Value = serde_json::from_slice(&sources.stdout).unwrap();
    assert_eq!(doc["serving"]["model"], "Org/Chat-Fixture");
    assert_eq!(doc["serving"]["tokenizer"], Value::Null);
    // An id that is not cached names where it looked.
    let missing = run_env(
        &[
            "export",
            "--hermes-home",
            h,
            "--tokenizer",
            "Org/Not-Cached",
        ],
        &[("HF_HUB_CACHE", hub.as_path())],
    );
    let err = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(1), "{err}");
    assert!(err.contains("models--Org--Not-Cached"), "{err}");
    assert!(err.contains(hub.to_str().unwrap()), "{err}");
    // An existing directory of that name wins.
    let cwd = tempfile::tempdir().unwrap();
    let local = cwd.path().join("Org/Chat-Fixture");
    std::fs::create_dir_all(&local).unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ] {
        std::fs::copy(repo_dir().join(f), local.join(f)).unwrap();
    }
    let out = std::process::Command::new(crate::common::bin())
        .args(id_args)
        .current_dir(cwd.path())
        .env("HF_HUB_CACHE", cwd.path().join("empty"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == by_dir.stdout);
}

#[test]
fn a_template_that_raises_on_the_probe_stops_before_anything_is_written() {
    let home = crate::common::fixture_home(crate::common::VERSIONS[0]);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("model");
    std::fs::create_dir(&dir).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(repo_dir().join(f), dir.join(f)).unwrap();
    }
    // Gemma's rule: no system turn.
    let template = std::fs::read_to_string(repo_dir().join("chat_template.jinja")).unwrap();
    std::fs::write(
        dir.join("chat_template.jinja"),
        format!("{{%- if messages[0].role == 'system' %}}{{{{ raise_exception('System role not supported') }}}}{{%- endif %}}\n{template}"),
    )
    .unwrap();
    let out = work.path().join("out");
    let state = work.path().join("state.json");
    let before = crate::common::snapshot_files(home.path());
    let args = [
        "export",
        "--hermes-home",
        home.path().to_str().unwrap(),
        "--tokenizer",
        dir.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--out",
        &format!("{}/", out.display()),
    ];
    let run = run_env(&args, &[]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(err.contains("System role not supported"), "{err}");
    assert!(err.contains("--fold-system"), "{err}");
    assert!(!out.exists() && !state.exists(), "nothing written");
    let left: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("model")],
        "no lock either"
    );
    assert_eq!(crate::common::snapshot_files(home.path()), before);
    // Folding the system prompt into the first user turn makes it work.
    let mut folded = args.to_vec();
    folded.push("--fold-system");
    let run = run_env(&folded, &[]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{err}");
    let lines = crate::common::lines(&std::fs::read(out.join("train.jsonl")).unwrap());
    assert!(!lines.is_empty());
    let soul = std::fs::read_to_string(home.path().join("SOUL.md")).unwrap();
    for v in &lines {
        let first = &v["messages"][0];
        assert_eq!(first["role"], "user");
        assert!(first["content"].as_str().unwrap().starts_with(soul.trim()));
    }
}

/// Estimate / real count of each golden sample under every real tokenizer
/// family (`golden/families.json`, `scripts/tokenizer.sh families`).
fn family_ratios() -> Vec<(String, Vec<f64>)> {
    let (samples, _) = golden();
    let fam: Value = serde_json::from_slice(
        &std::fs::read(repo().join("fixtures/tokenizer/golden/families.json")).unwrap(),
    )
    .unwrap();
    let mut estimate = Counter::new(None).unwrap();
    let est: Vec<usize> = samples
        .iter()
        .map(|s| {
            let (m, t) = parts(s);
            estimate.count_json(&m, t.as_deref()).unwrap().total
        })
        .collect();
    fam["tokenizers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, counts)| {
            let r = counts
                .as_array()
                .unwrap()
                .iter()
                .zip(&est)
                .map(|(c, e)| *e as f64 / c.as_u64().unwrap() as f64)
                .collect();
            (name.clone(), r)
        })
        .collect()
}

#[test]
fn the_estimate_is_never_under_any_real_tokenizer_family() {
    for (name, ratios) in family_ratios() {
        let min = ratios.iter().copied().fold(f64::MAX, f64::min);
        let max = ratios.iter().copied().fold(0.0, f64::max);
        eprintln!("{name}: estimate / real {min:.3} .. {max:.3}");
        assert!(
            min >= 1.0,
            "{name}: the estimate is under the real count ({min:.3})"
        );
    }
}

/// Estimate / real count of each golden sample under `tokenizer` (a key of
/// `golden/families.json`), with the estimate of `family`.
fn ratios_of(family: Option<Family>, tokenizer: &str) -> Vec<f64> {
    let (samples, _) = golden();
    let fam: Value = serde_json::from_slice(
        &std::fs::read(repo().join("fixtures/tokenizer/golden/families.json")).unwrap(),
    )
    .unwrap();
    let real = fam["tokenizers"][tokenizer].as_array().expect(tokenizer);
    let mut estimate = Counter::with_estimate(None, family).unwrap();
    samples
        .iter()
        .zip(real)
        .map(|(s, r)| {
            let (m, t) = parts(s);
            let e = estimate.count_json(&m, t.as_deref()).unwrap().total;
            e as f64 / r.as_u64().unwrap() as f64
        })
        .collect()
}

#[test]
fn a_familys_estimate_is_never_under_and_at_most_15_percent_over_on_the_goldens() {
    let cases = [
        (Family::Qwen, "Qwen 2 / 2.5 / 3"),
        (Family::Qwen, "Qwen 3.5 / 3.6"),
        (Family::Llama3, "Llama 3 (3.1/3.2/3.3; Hermes 3/4 bases)"),
    ];
    for (family, tokenizer) in cases {
        for (label, f) in [("generic", None), (family.as_str(), Some(family))] {
            let mut r = ratios_of(f, tokenizer);
            r.sort_by(f64::total_cmp);
            eprintln!(
                "{tokenizer}, {label} estimate / real: min {:.3} median {:.3} max {:.3}",
                r[0],
                r[r.len() / 2],
                r[r.len() - 1]
            );
        }
        let r = ratios_of(Some(family), tokenizer);
        for (n, x) in r.iter().enumerate() {
            let line = n + 1;
            assert!(*x >= 1.0, "{tokenizer}: line {line} under ({x:.3})");
            assert!(
                *x <= 1.15,
                "{tokenizer}: line {line} over by more than 15% ({x:.3})"
            );
        }
    }
}

/// Exports one session of the 0.19 fixture into a directory; returns the
/// lines, the manifest (checked against its schema) and stderr.
fn export_to_dir(home: &std::path::Path, args: &[&str]) -> (Vec<Value>, Value, String) {
    let out = tempfile::tempdir().unwrap();
    let dir = format!("{}/", out.path().display());
    let mut full = vec!["export", "--out", &dir];
    full.extend_from_slice(args);
    let run = crate::common::run_ok(home, &full);
    let lines = crate::common::lines(&std::fs::read(out.path().join("train.jsonl")).unwrap());
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("manifest.json")).unwrap()).unwrap();
    let errors: Vec<String> = crate::cron::manifest_schema()
        .iter_errors(&manifest)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    (
        lines,
        manifest,
        String::from_utf8_lossy(&run.stderr).into_owned(),
    )
}

/// transformers' counts of the golden samples under the generation-less
/// template (`golden/prefix-diff.json`).
fn prefix_diff_golden() -> Value {
    serde_json::from_slice(
        &std::fs::read(repo().join("fixtures/tokenizer/golden/prefix-diff.json")).unwrap(),
    )
    .unwrap()
}

/// The export flags of golden line 10 (the 0.19 capture's session below,
/// with no system prompt and no tools: golden/sources.json), counted with
/// `tokenizer`.
fn golden_10_args(tokenizer: &std::path::Path) -> [&str; 8] {
    [
        "--session",
        "20261125_133254_3fe5bc97",
        "--system-prompt",
        "none",
        "--tools",
        "none",
        "--tokenizer",
        tokenizer.to_str().unwrap(),
    ]
}

#[test]
fn the_binary_counts_a_generation_less_templates_trainable_tokens_as_the_golden() {
    let (samples, _) = golden();
    let want = &prefix_diff_golden()["samples"][9];
    let home = crate::common::fixture_home("hermes-0.19.0");
    let model = nogen_dir();
    let args = golden_10_args(model.path());
    let (lines, manifest, stderr) = export_to_dir(home.path(), &args);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert_eq!(lines[0]["messages"], samples[9]["messages"]);
    let tokens = &manifest["tokens"];
    assert_eq!(tokens["template"]["generation_block"], false);
    assert_eq!(tokens["template"]["trainable_by"], "prefix_diff");
    let ch = &tokens["channels"]["telegram"];
    assert_eq!(ch["samples"], 1);
    assert_eq!(ch["total"], want["tokens"], "{ch}");
    assert_eq!(ch["trainable"], want["trainable"], "{ch}");
    assert_eq!(ch["trainable_last_turn"], want["last_turn"], "{ch}");
    // The one-line summary (no terminal) gives the total as counted.
    let summary = format!("; {} tokens (exact), ", want["tokens"]);
    assert!(stderr.contains(&summary), "{summary}: {stderr}");
}

#[test]
fn auto_takes_the_estimate_of_the_family_config_yaml_serves() {
    let home = crate::common::fixture_home("hermes-0.19.0");
    let args = ["--session", "20261125_133254_3fe5bc97"];
    let (generic, m, stderr) = export_to_dir(home.path(), &args);
    assert!(!stderr.contains("estimating tokens for"), "{stderr}");
    let generic_total = m["tokens"]["channels"]["telegram"]["total"]
        .as_u64()
        .unwrap();
    let config = home.path().join("config.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("default: fake-model-1"));
    std::fs::write(&config, text.replace("fake-model-1", "Qwen/Qwen3-8B")).unwrap();
    let (lines, m, stderr) = export_to_dir(home.path(), &args);
    assert!(
        stderr.contains("estimating tokens for the qwen family, from the model config.yaml serves (Qwen/Qwen3-8B)"),
        "{stderr}"
    );
    assert!(
        m["tokens"]["counted_with"]
            .as_str()
            .unwrap()
            .contains("qwen tokenizer family")
    );
    assert_eq!(lines, generic, "the same samples, counted tighter");
    let qwen_total = m["tokens"]["channels"]["telegram"]["total"]
        .as_u64()
        .unwrap();
    assert!(
        qwen_total < generic_total,
        "{qwen_total} vs {generic_total}"
    );
    // The flag wins over config.yaml.
    let mut flagged = args.to_vec();
    flagged.extend(["--estimate-family", "generic"]);
    let (_, m, stderr) = export_to_dir(home.path(), &flagged);
    assert!(!stderr.contains("estimating tokens for"), "{stderr}");
    assert_eq!(m["tokens"]["channels"]["telegram"]["total"], generic_total);
}

#[test]
fn with_generation_blocks_the_last_turn_is_counted_for_a_manifest_and_stdout_gets_the_same_lines() {
    // The fixture template renders the text its generation-less copy
    // renders, so the last turn's prefix difference is the golden's. Only a
    // manifest shows it; stdout (where it is not counted) gets the same
    // lines and the same summary figures.
    let want = &prefix_diff_golden()["samples"][9];
    let home = crate::common::fixture_home("hermes-0.19.0");
    let tokenizer = repo().join("fixtures/tokenizer/chatml");
    let args = golden_10_args(&tokenizer);
    let (lines, manifest, dir_stderr) = export_to_dir(home.path(), &args);
    let tokens = &manifest["tokens"];
    assert_eq!(tokens["template"]["generation_block"], true);
    let ch = &tokens["channels"]["telegram"];
    assert_eq!(ch["total"], want["tokens"], "{ch}");
    assert_eq!(ch["trainable_last_turn"], want["last_turn"], "{ch}");
    let mut full = vec!["export", "--out", "-"];
    full.extend_from_slice(&args);
    let run = crate::common::run_ok(home.path(), &full);
    assert_eq!(crate::common::lines(&run.stdout), lines);
    // Up to the dataset's own part, which only a directory has.
    let summary = |s: &str| {
        let line = s[s.find("; ").unwrap()..].lines().next().unwrap();
        line.split("; dataset").next().unwrap().to_string()
    };
    assert_eq!(
        summary(&String::from_utf8_lossy(&run.stderr)),
        summary(&dir_stderr)
    );
}
