//! Token counts and renderings against golden values that Python
//! transformers' `apply_chat_template` produced on the same tokenizer
//! directories (`scripts/tokenizer.sh golden`; versions in counts.json).

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
