//! The dataset card: `README.md` beside the data of an `--out DIR/`
//! export, for the person who opens the directory later. It is made from
//! the manifest just written (so its figures are the manifest's) and
//! rewritten whenever the manifest is.
//!
//! A `README.md` this tool did not write (see [`is_ours`]) is the user's
//! own: it is left alone and the card is written as `DATASET_CARD.md`
//! instead (said once, when that file is first made).
//!
//! The card opens with YAML front matter, as a Hugging Face dataset repo's
//! README does (see [`front_matter`]): its `configs` name the data file of
//! each split and its `features` the column types, so `load_dataset(DIR)`
//! reads both splits in one call whatever keys each split's messages carry,
//! and the directory can be pushed to a hub as it is.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use anyhow::Result;
use serde_json::Value;

use crate::sink::{persist, temp_beside};

/// How every card this tool writes starts: the front matter's opening line
/// and a YAML comment (the marker sits inside the front matter, which must
/// come first for a hub or `datasets` to read it).
pub const MARK: &str = "---\n# hermes-harvest dataset card: rewritten on every run\n";
/// How cards of earlier versions started (no front matter).
const LEGACY_MARK: &str = "<!-- hermes-harvest dataset card: rewritten on every run -->";
/// Where a card may be, in the order `validate` looks.
pub const NAMES: [&str; 2] = ["README.md", "DATASET_CARD.md"];

/// Whether a card file was written by this tool (by any version of it): the
/// one test of ownership, for writing the card and for `validate`.
pub fn is_ours(bytes: &[u8]) -> bool {
    bytes.starts_with(MARK.as_bytes()) || bytes.starts_with(LEGACY_MARK.as_bytes())
}

/// The card's file name when the user's own `README.md` is in the way.
pub const ALT_NAME: &str = NAMES[1];

/// Whether `readme` exists and is not a card of ours. Only its first bytes
/// are read, so a large README.md of the user's is kept too; one that
/// cannot be read counts as theirs.
fn someone_elses(readme: &Path) -> bool {
    match crate::safe_io::open_regular(readme, u64::MAX) {
        Ok(f) => {
            let mut head = Vec::new();
            let read = std::io::Read::read_to_end(
                &mut std::io::Read::take(f, MARK.len().max(LEGACY_MARK.len()) as u64),
                &mut head,
            );
            read.is_err() || !is_ours(&head)
        }
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

/// Writes the card into `dir` from the manifest `m`: `README.md`, or
/// `DATASET_CARD.md` when a README.md of someone else's is there; returns
/// the file name written.
pub fn write(dir: &Path, m: &Value) -> Result<&'static str> {
    let readme = dir.join("README.md");
    let theirs = someone_elses(&readme);
    let name = if theirs { ALT_NAME } else { "README.md" };
    let target = dir.join(name);
    if theirs && !target.exists() {
        eprintln!(
            "hermes-harvest: warning: {} is not a dataset card of hermes-harvest; it is left alone and the card is written as {ALT_NAME}",
            readme.display()
        );
    }
    let mut tmp = temp_beside(&target)?;
    tmp.write_all(render(m).as_bytes())?;
    persist(tmp, &target)?;
    Ok(name)
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    }
}

/// A two-column Markdown table of an object's entries (nothing when empty).
fn table(out: &mut String, head: (&str, &str), v: &Value) {
    let Some(map) = v.as_object().filter(|m| !m.is_empty()) else {
        out.push_str("none\n\n");
        return;
    };
    let _ = writeln!(out, "| {} | {} |\n|---|---:|", head.0, head.1);
    for (k, x) in map {
        let _ = writeln!(out, "| {k} | {} |", text(x));
    }
    out.push('\n');
}

/// The card's Markdown.
pub fn render(m: &Value) -> String {
    let format = text(&m["format"]);
    let mut out = front_matter(m);
    let _ = writeln!(out, "# Training data from Hermes Agent ({format})\n");
    let _ = writeln!(
        out,
        "Exported by {} {} on {} from the stores of a Hermes Agent home. {}\n",
        text(&m["tool"]),
        text(&m["version"]),
        text(&m["created"]),
        if m["cumulative"] == Value::Bool(true) {
            "The files are cumulative: every nightly run appends what is new, and this card describes the last run and the files as they now are."
        } else {
            "The files were written in one run."
        }
    );
    let _ = writeln!(
        out,
        "Turns from {} to {} (the whole dataset). {}\n",
        text(&m["dataset"]["time_range"]["first"]),
        text(&m["dataset"]["time_range"]["last"]),
        if m["curation"]["meta"] == Value::Bool(false) {
            "The lines carry no `meta`."
        } else {
            "Every line ends with `meta` (session, split unit, channel, raw source, turn times), which trainers ignore."
        }
    );
    files(&mut out, m);
    dataset(&mut out, &m["dataset"]);
    samples(&mut out, m);
    tokens(&mut out, &m["tokens"]);
    redaction(&mut out, &m["redactions"]);
    training(&mut out, &format, &text(&m["tokens"]["max_tokens"]));
    // TRL's assistant_only_loss needs a template with {% generation %}.
    if m["tokens"]["template"]["generation_block"] != true {
        out = out.replace(
            ", assistant_only_loss=True))",
            "))  # assistant_only_loss=True only with a {% generation %} template",
        );
    }
    out.push_str(
        "`manifest.json` holds the same figures for machines, with the flags of the run.\n",
    );
    out
}

fn files(out: &mut String, m: &Value) {
    out.push_str("## Files\n\n");
    let files = &m["split"]["files"];
    if let Some(f) = files.as_object() {
        out.push_str("| file | lines | bytes |\n|---|---:|---:|\n");
        for (name, c) in f {
            let _ = writeln!(
                out,
                "| {name} | {} | {} |",
                text(&c["lines"]),
                text(&c["bytes"])
            );
        }
        let units = &m["split"]["units"];
        let _ = writeln!(
            out,
            "\nThe split unit is a session (its compression lineage), or one UTC day of a nexus session (`meta.unit`); a unit lies in one split only and a line's context never leaves its unit. Units: {} in train, {} in valid (valid fraction {}, counted in units; a unit keeps the split it was first placed in). A split without a line has no file.\n",
            text(&units["train"]),
            text(&units["valid"]),
            text(&m["split"]["valid_fraction"])
        );
        if files["valid.jsonl"]["lines"].as_u64().unwrap_or(0) == 0 {
            out.push_str("There is no validation split yet (too few units for the valid fraction): trainers that need one (mlx-lm wants `valid.jsonl` with a few rows) must run without validation for now.\n\n");
        }
    }
}

/// The whole cumulative dataset (every night).
fn dataset(out: &mut String, d: &Value) {
    if !d.is_object() {
        return;
    }
    let _ = writeln!(
        out,
        "## The whole dataset\n\nOver {} run(s). Lines per channel:\n",
        text(&d["nights"])
    );
    table(out, ("channel", "lines"), &d["samples"]);
    if d["signals"].as_object().is_some_and(|s| !s.is_empty()) {
        out.push_str("Per preference signal:\n\n");
        table(out, ("signal", "pairs"), &d["signals"]);
    }
    if let Some(ch) = d["tokens"].as_object().filter(|t| !t.is_empty()) {
        out.push_str("Tokens per channel (as counted when each line was written):\n\n| channel | lines | total | trainable |\n|---|---:|---:|---:|\n");
        for (name, c) in ch {
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} |",
                text(&c["samples"]),
                text(&c["total"]),
                text(&c["trainable"])
            );
        }
        out.push('\n');
    }
    out.push_str("Left out over every run, per reason:\n\n");
    table(out, ("reason", "count"), &d["skipped"]);
    out.push_str("Redacted over every run, per kind:\n\n");
    table(out, ("kind", "redacted"), &d["redactions"]);
    let _ = writeln!(
        out,
        "Lines removed by `forget`: {}; retracted (their answer regenerated or undone): {}.\n",
        text(&d["forgotten_lines"]),
        text(&d["retracted_lines"])
    );
}

fn samples(out: &mut String, m: &Value) {
    out.push_str("## Samples written by the last run\n\nPer channel:\n\n");
    table(out, ("channel", "samples"), &m["counts"]["channels"]);
    if m["counts"]["signals"].is_object() {
        out.push_str("Per preference signal:\n\n");
        table(out, ("signal", "pairs"), &m["counts"]["signals"]);
    }
    out.push_str("Left out, per reason:\n\n");
    table(out, ("reason", "count"), &m["counts"]["skipped"]);
    let c = &m["curation"];
    if c.is_object() {
        let _ = writeln!(
            out,
            "Exact duplicates dropped: {}; near duplicates dropped: {} (at most {} per normalised exchange); sessions forgotten: {}.\n",
            text(&c["exact_duplicates_dropped"]),
            text(&c["near_duplicates_dropped"]),
            text(&c["near_duplicate_cap"]),
            text(&c["forgotten_sessions"]),
        );
    }
}

fn tokens(out: &mut String, t: &Value) {
    let _ = writeln!(
        out,
        "## Tokens\n\nCounted with {} ({}); budget {} tokens a sample: set the trainer's maximum length to at least that.\n",
        text(&t["counted_with"]),
        if t["exact"] == Value::Bool(true) {
            "exact"
        } else {
            "an estimate"
        },
        text(&t["max_tokens"]),
    );
    if let Some(ch) = t["channels"].as_object() {
        out.push_str(
            "| channel | samples | total | trainable | longest |\n|---|---:|---:|---:|---:|\n",
        );
        for (name, c) in ch {
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} |",
                text(&c["samples"]),
                text(&c["total"]),
                text(&c["trainable"]),
                text(&c["longest"])
            );
        }
        out.push('\n');
    }
}

fn redaction(out: &mut String, r: &Value) {
    out.push_str("## Redaction\n\n");
    if r.as_object().is_some_and(|r| r.is_empty()) {
        out.push_str("On; nothing needed redacting.\n\n");
    } else if r.is_object() {
        table(out, ("kind", "redacted"), r);
    } else {
        out.push_str("Off (`--no-redact`): the lines may hold secrets and home paths.\n\n");
    }
}

/// The split of each data file (`load_dataset`'s names).
const SPLITS: [(&str, &str); 2] = [("train.jsonl", "train"), ("valid.jsonl", "validation")];

/// The card's YAML front matter: [`MARK`], then `configs` (the data file of
/// each split that holds lines: `datasets` refuses a split whose file is
/// empty) and `dataset_info.features`.
///
/// Messages, tools and `meta` are declared `json` (the `Json` feature of
/// `datasets` 4.7 and later): each value reads back exactly as written. A
/// struct type inferred from the data instead takes its fields from the
/// first file (two splits whose messages carry different keys do not load
/// together) and adds every other row's keys as nulls (tool-call
/// `arguments` of one tool gain the other tools' argument names), which
/// changes the training text. `datasets` before 4.7 cannot read `json`.
pub fn front_matter(m: &Value) -> String {
    let mut out = MARK.to_string();
    let files = &m["split"]["files"];
    let splits: Vec<_> = SPLITS
        .iter()
        .filter(|(f, _)| files[*f]["lines"].as_u64().is_some_and(|n| n > 0))
        .collect();
    if !splits.is_empty() {
        out.push_str("configs:\n- config_name: default\n  data_files:\n");
        for (file, split) in splits {
            let _ = writeln!(out, "  - split: {split}\n    path: {file}");
        }
    }
    out.push_str("dataset_info:\n  features:\n");
    for (name, kind) in features(m) {
        let _ = writeln!(out, "  - name: {name}\n    {kind}");
    }
    out.push_str("---\n\n");
    out
}

/// Each column the lines of the manifest's format carry, with its type.
fn features(m: &Value) -> Vec<(&'static str, &'static str)> {
    const LIST: &str = "list: json";
    const STRING: &str = "dtype: string";
    let mut cols = match m["format"].as_str() {
        Some("dpo-flat") => vec![
            ("system", STRING),
            ("prompt", STRING),
            ("chosen", STRING),
            ("rejected", STRING),
        ],
        Some("dpo") => vec![("prompt", LIST), ("chosen", LIST), ("rejected", LIST)],
        _ => vec![("messages", LIST)],
    };
    if m["format"] != "dpo-flat" && m["tokens"]["tools_policy"] != "none" {
        cols.push(("tools", LIST));
    }
    if m["curation"]["meta"] != Value::Bool(false) {
        cols.push(("meta", "dtype: json"));
    }
    cols
}

/// How to train on the directory: the recipes `scripts/trainer-recipes.sh`
/// runs as written (with `DIR` and `MODEL` filled in).
fn training(out: &mut String, format: &str, max: &str) {
    out.push_str("## Training on it\n\n");
    let load = "`load_dataset(DIR)` reads both splits in one call (the front matter above declares the files and the column types; `datasets` 4.7 or later).";
    match format {
        "sft" => {
            let _ = writeln!(
                out,
                "mlx-lm (reads `train.jsonl` and `valid.jsonl` from the directory; it wants a `valid.jsonl` of at least a batch):\n\n```sh\nmlx_lm.lora --model MODEL --train --data DIR --max-seq-length {max} --mask-prompt\n```\n\nTRL ({load} `assistant_only_loss` needs a chat template with `{{% generation %}}` blocks, which TRL adds only to the templates it knows; leave it out otherwise):\n\n```python\nfrom datasets import load_dataset\nfrom trl import SFTConfig, SFTTrainer\ndata = load_dataset(DIR)\ntrainer = SFTTrainer(model=MODEL, train_dataset=data[\"train\"], eval_dataset=data.get(\"validation\"),\n                     args=SFTConfig(max_length={max}, assistant_only_loss=True))\ntrainer.train()\n```\n"
            );
        }
        "dpo" => {
            let _ = writeln!(
                out,
                "TRL ({load}):\n\n```python\nfrom datasets import load_dataset\nfrom trl import DPOConfig, DPOTrainer\ndata = load_dataset(DIR)\ntrainer = DPOTrainer(model=MODEL, train_dataset=data[\"train\"], eval_dataset=data.get(\"validation\"),\n                     args=DPOConfig(max_length={max}))\ntrainer.train()\n```\n\nFor mlx-lm-lora, export with `--dpo-style flat`.\n"
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "mlx-lm-lora (reads `train.jsonl` and `valid.jsonl` from the directory):\n\n```sh\nmlx_lm_lora.train --model MODEL --train --train-mode dpo --data DIR --max-seq-length {max}\n```\n\nTRL takes these lines too ({load}): `DPOTrainer` as for `--format dpo`.\n"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_card_carries_the_manifest_figures() {
        let m = serde_json::json!({
            "tool": "hermes-harvest", "version": "0", "format": "sft", "cumulative": true,
            "created": "2026-12-01T00:00:00Z",
            "time_range": {"first": "2026-11-01T00:00:00Z", "last": null},
            "dataset": {"time_range": {"first": "2026-10-01T00:00:00Z", "last": null}, "nights": 3,
                        "samples": {"nexus": 40}, "signals": {}, "skipped": {}, "forgotten_lines": 0,
                        "tokens": {"nexus": {"samples": 40, "total": 12000, "trainable": 3000}}},
            "split": {"valid_fraction": 0.05, "units": {"train": 3, "valid": 0},
                      "files": {"train.jsonl": {"lines": 17, "bytes": 9}}},
            "counts": {"channels": {"nexus": 12}, "signals": null, "skipped": {"near_duplicate": 5}},
            "tokens": {"counted_with": "estimate", "exact": false, "max_tokens": 2048,
                       "channels": {"nexus": {"samples": 12, "total": 4000, "trainable": 900, "longest": 700}}},
            "redactions": {"openai_key": 2},
            "curation": {"exact_duplicates_dropped": 1, "near_duplicates_dropped": 5, "near_duplicate_cap": 3, "forgotten_sessions": 0}
        });
        let card = render(&m);
        assert!(card.starts_with(MARK) && is_ours(card.as_bytes()));
        for needle in [
            "| train.jsonl | 17 | 9 |",
            "Turns from 2026-10-01T00:00:00Z",
            "| nexus | 40 |",
            "| nexus | 40 | 12000 | 3000 |",
            "no validation split yet",
            "| nexus | 12 |",
            "| near_duplicate | 5 |",
            "| nexus | 12 | 4000 | 900 | 700 |",
            "| openai_key | 2 |",
            "mlx_lm.lora",
            "SFTTrainer",
        ] {
            assert!(card.contains(needle), "{needle} missing:\n{card}");
        }
    }

    #[test]
    fn the_front_matter_declares_the_splits_that_hold_lines_and_every_column() {
        let m = serde_json::json!({
            "format": "dpo", "tokens": {"tools_policy": "used"}, "curation": {"meta": true},
            "split": {"files": {"train.jsonl": {"lines": 3, "bytes": 9}, "valid.jsonl": {"lines": 0, "bytes": 0}}}
        });
        let fm = front_matter(&m);
        assert!(fm.starts_with(MARK) && fm.ends_with("---\n\n"), "{fm}");
        assert!(
            fm.contains("  - split: train\n    path: train.jsonl\n"),
            "{fm}"
        );
        assert!(
            !fm.contains("valid.jsonl"),
            "an empty split is left out: {fm}"
        );
        for col in ["prompt", "chosen", "rejected", "tools"] {
            assert!(
                fm.contains(&format!("  - name: {col}\n    list: json\n")),
                "{col}: {fm}"
            );
        }
        assert!(fm.contains("  - name: meta\n    dtype: json\n"), "{fm}");
        let flat = serde_json::json!({"format": "dpo-flat", "curation": {"meta": false},
            "split": {"files": {"valid.jsonl": {"lines": 1, "bytes": 9}}}});
        let fm = front_matter(&flat);
        assert!(fm.contains("  - name: system\n    dtype: string\n"), "{fm}");
        assert!(
            fm.contains("  - split: validation\n    path: valid.jsonl\n"),
            "{fm}"
        );
        assert!(!fm.contains("meta") && !fm.contains("tools"), "{fm}");
    }

    #[test]
    fn cards_of_every_version_are_ours_and_nothing_else_is() {
        assert!(is_ours(
            render(&serde_json::json!({"format": "sft"})).as_bytes()
        ));
        assert!(is_ours(
            b"<!-- hermes-harvest dataset card: rewritten on every run -->\n# Old card\n"
        ));
        assert!(!is_ours(b"---\nlicense: mit\n---\n# My dataset\n"));
        assert!(!is_ours(b""));
    }
}
