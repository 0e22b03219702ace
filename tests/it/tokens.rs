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
