//! The dataset card: `README.md` beside the data of an `--out DIR/`
//! export, for the person who opens the directory later. It is made from
//! the manifest just written (so its figures are the manifest's) and
//! rewritten whenever the manifest is.
//!
//! A `README.md` this tool did not write (no [`MARK`] on its first line) is
//! the user's own: it is left alone and the card is written as
//! `DATASET_CARD.md` instead (said once, when that file is first made).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use anyhow::Result;
use serde_json::Value;

use crate::sink::{persist, temp_beside};

/// First line of every card this tool writes.
pub const MARK: &str = "<!-- hermes-harvest dataset card: rewritten on every run -->";

/// The card's file name when the user's own `README.md` is in the way.
pub const ALT_NAME: &str = "DATASET_CARD.md";

/// Whether `readme` exists and is not a card of ours. Only its first bytes
/// are read, so a large README.md of the user's is kept too; one that
/// cannot be read counts as theirs.
fn someone_elses(readme: &Path) -> bool {
    match crate::safe_io::open_regular(readme, u64::MAX) {
        Ok(f) => {
            let mut head = Vec::new();
            let read = std::io::Read::read_to_end(
                &mut std::io::Read::take(f, MARK.len() as u64),
                &mut head,
            );
            read.is_err() || !head.starts_with(MARK.as_bytes())
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
    let mut out = format!("{MARK}\n# Training data from Hermes Agent ({format})\n\n");
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
    out.push_str("Left out over every run, per reason:\n\n");
    table(out, ("reason", "count"), &d["skipped"]);
    let _ = writeln!(
        out,
        "Lines removed by `forget`: {}.\n",
        text(&d["forgotten_lines"])
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

/// How to train on the directory. Each split is loaded on its own: `datasets`
/// takes the column types of the first file for all, and two files whose
/// messages carry different keys then fail to load together.
fn training(out: &mut String, format: &str, max: &str) {
    out.push_str("## Training on it\n\n");
    if format == "sft" {
        let _ = writeln!(
            out,
            "mlx-lm (reads `train.jsonl` and `valid.jsonl` from the directory):\n\n```sh\nmlx_lm.lora --model MODEL --train --data . --max-seq-length {max} --mask-prompt\n```\n\nTRL:\n\n```python\nfrom datasets import load_dataset\nfrom trl import SFTConfig, SFTTrainer\ntrain = load_dataset(\"json\", data_files=\"train.jsonl\", split=\"train\")\nvalid = load_dataset(\"json\", data_files=\"valid.jsonl\", split=\"train\")\ntrainer = SFTTrainer(model=MODEL, train_dataset=train, eval_dataset=valid,\n                     args=SFTConfig(max_length={max}, assistant_only_loss=True))\n```\n"
        );
    } else {
        let _ = writeln!(
            out,
            "TRL:\n\n```python\nfrom datasets import load_dataset\nfrom trl import DPOConfig, DPOTrainer\ntrain = load_dataset(\"json\", data_files=\"train.jsonl\", split=\"train\")\nvalid = load_dataset(\"json\", data_files=\"valid.jsonl\", split=\"train\")\ntrainer = DPOTrainer(model=MODEL, train_dataset=train, eval_dataset=valid,\n                     args=DPOConfig(max_length={max}))\n```\n\n`--dpo-style flat` lines suit mlx-lm-lora's DPO mode.\n"
        );
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
                        "samples": {"nexus": 40}, "signals": {}, "skipped": {}, "forgotten_lines": 0},
            "split": {"valid_fraction": 0.05, "units": {"train": 3, "valid": 0},
                      "files": {"train.jsonl": {"lines": 17, "bytes": 9}}},
            "counts": {"channels": {"nexus": 12}, "signals": null, "skipped": {"near_duplicate": 5}},
            "tokens": {"counted_with": "estimate", "exact": false, "max_tokens": 2048,
                       "channels": {"nexus": {"samples": 12, "total": 4000, "trainable": 900, "longest": 700}}},
            "redactions": {"openai_key": 2},
            "curation": {"exact_duplicates_dropped": 1, "near_duplicates_dropped": 5, "near_duplicate_cap": 3, "forgotten_sessions": 0}
        });
        let card = render(&m);
        assert!(card.starts_with(MARK));
        for needle in [
            "| train.jsonl | 17 | 9 |",
            "Turns from 2026-10-01T00:00:00Z",
            "| nexus | 40 |",
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
}
