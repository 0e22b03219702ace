//! The export's summary on stderr. On a terminal it is a short block: a
//! headline, then a line each for channels, tokens, skips, redactions, the
//! rebuild's history and the dataset. Anywhere else (cron, a log file) it
//! is one line of the essentials: sessions read per store, lines written
//! per channel (pairs per signal), tokens, skips per reason, redactions, the
//! dataset's lines. `--quiet` prints neither. Every figure, the per-channel tokens
//! included, is in the manifest of a directory output.
//!
//! Events print their own line before the summary: a changed
//! `--valid-fraction`, the one-time re-check of covered turns (what it
//! added), retracted lines, a reader that closed the pipe, and
//! (a warning) lines written without a called tool's definition.

use std::collections::BTreeMap;

use super::Closed;
use crate::config::ExportConfig;
use crate::manifest::Totals;
use crate::report::{Report, counts};

/// The parts both forms print.
struct Parts {
    read: String,
    wrote: String,
    channels: String,
    /// `exact` or `estimated`; total and trainable tokens, the share
    /// trainable (%), the longest sample.
    how: &'static str,
    tokens: (usize, usize, f64, usize),
}

pub(super) fn print(report: &Report, closed: &Closed, cfg: &ExportConfig) {
    events(report, closed);
    let totals = &closed.totals;
    let written: usize = totals.samples.values().sum();
    let read: usize = report.sessions_read.values().sum();
    let cumulative = cfg.state.is_some();
    if cumulative && written == 0 && closed.written.as_ref().is_none_or(|w| w.new_lines == 0) {
        report.info(format_args!(
            "nothing new since the last run; outputs left as they were (read {read} sessions)"
        ));
        return;
    }
    let parts = parts(report, closed, cfg);
    let dataset = dataset(closed);
    if report.on_terminal() {
        block(report, closed, cfg, parts, dataset);
    } else {
        line(report, closed, cfg, parts, dataset);
    }
}

fn parts(report: &Report, closed: &Closed, cfg: &ExportConfig) -> Parts {
    let totals = &closed.totals;
    let written: usize = totals.samples.values().sum();
    let read: usize = report.sessions_read.values().sum();
    let shape = if cfg.shape.is_dpo() { "dpo" } else { "sft" };
    let mut channels = counts(&totals.per_channel(cfg));
    if cfg.shape.is_dpo() {
        channels.push_str(&format!("; pairs: {}", counts(&totals.per_signal(cfg))));
    }
    let how = if closed.exact { "exact" } else { "estimated" };
    let (total, trainable, longest) = token_sums(totals);
    let share = if total == 0 {
        0.0
    } else {
        100.0 * trainable as f64 / total as f64
    };
    Parts {
        read: format!("read {read} sessions ({})", counts(&report.sessions_read)),
        wrote: format!("wrote {written} {shape} lines"),
        channels,
        how,
        tokens: (total, trainable, share, longest),
    }
}

/// Total and trainable tokens of every channel, and the longest sample.
fn token_sums(totals: &Totals) -> (usize, usize, usize) {
    totals.tokens.values().fold((0, 0, 0), |(t, tr, l), c| {
        (t + c.total, tr + c.trainable, l.max(c.longest))
    })
}

/// One line, for cron and logs.
fn line(report: &Report, closed: &Closed, cfg: &ExportConfig, p: Parts, dataset: Option<Held>) {
    let redacted = if cfg.redact {
        closed.redactions.values().sum::<usize>().to_string()
    } else {
        "off".to_string()
    };
    let (total, _, share, _) = p.tokens;
    let mut out = format!(
        "{}; {} ({}); {total} tokens ({}), {share:.0}% trainable; skipped: {}; redacted: {redacted}",
        p.read,
        p.wrote,
        p.channels,
        p.how,
        counts(&report.skipped)
    );
    out.push_str(&borrowed(&closed.totals));
    if let Some((train, valid, _)) = dataset {
        out.push_str(&format!("; dataset: train {train} lines, valid {valid}"));
        out.push_str(no_valid(train, valid));
    }
    report.info(out);
}

/// A few lines, for a person at a terminal.
fn block(report: &Report, closed: &Closed, cfg: &ExportConfig, p: Parts, dataset: Option<Held>) {
    let t = &closed.totals;
    let h = &t.history;
    let redacted = if cfg.redact {
        counts(&closed.redactions)
    } else {
        "off".to_string()
    };
    let (total, trainable, share, longest) = p.tokens;
    let mut lines = vec![
        format!("{}; {}", p.read, p.wrote),
        format!("channels: {}", p.channels),
        format!(
            "tokens ({}, at most {} a line): {total}, {trainable} trainable ({share:.0}%), longest {longest}; system prompts: {}",
            p.how,
            cfg.max_tokens,
            counts(&t.prompts)
        ),
        format!("skipped: {}", counts(&report.skipped)),
        format!("redacted: {redacted}"),
        format!(
            "history: {} summaries and {} compaction copies dropped, {} undone rows left out{}",
            h.summaries,
            h.compaction_copies,
            h.undone_rows,
            borrowed(t)
        ),
    ];
    if let Some((train, valid, (train_units, valid_units))) = dataset {
        lines.push(format!(
            "dataset: train {}, {}; valid {}, {}{}",
            n(train, "line"),
            n(train_units, "unit"),
            n(valid, "line"),
            n(valid_units, "unit"),
            no_valid(train, valid)
        ));
    }
    report.info_block(&lines);
}

fn borrowed(totals: &Totals) -> String {
    match totals.definitions_borrowed {
        0 => String::new(),
        n => format!("; {n} called tools' definitions borrowed from other sessions"),
    }
}

/// A directory output's lines in train and valid after the run, and
/// its units in each.
type Held = (u64, u64, (u64, u64));

fn dataset(closed: &Closed) -> Option<Held> {
    let m = closed.manifest.as_ref()?;
    let d = &m["dataset"];
    let figure = |k: &str, f: &str| d[k][f].as_u64().unwrap_or(0);
    Some((
        figure("lines", "train.jsonl"),
        figure("lines", "valid.jsonl"),
        (figure("units", "train"), figure("units", "valid")),
    ))
}

/// Said while train holds lines and valid none.
fn no_valid(train: u64, valid: u64) -> &'static str {
    if valid == 0 && train > 0 {
        " (no validation file yet: too few units for --valid-fraction; mlx-lm needs one)"
    } else {
        ""
    }
}

/// `1 line`, `2 lines`.
fn n(count: u64, what: &str) -> String {
    let s = if count == 1 { "" } else { "s" };
    format!("{count} {what}{s}")
}

/// What happened besides the figures, a line each.
fn events(report: &Report, closed: &Closed) {
    if let Some((from, to)) = closed.fraction_changed {
        report.info(format_args!(
            "--valid-fraction changed from {from} to {to}: it applies to units new from now on; the units already placed keep their split"
        ));
    }
    if let Some(r) = &closed.rechecked {
        report.info(format_args!(
            "re-checked the turns earlier runs covered, once (export rules {} -> {}): {} written that the files did not hold ({})",
            r.rules_before,
            r.rules,
            n(r.lines, "line"),
            n(r.turns, if closed.dpo { "pair" } else { "turn" })
        ));
    }
    if closed.retracted > 0 {
        report.info(format_args!(
            "retracted {} line(s) whose answer Hermes's history shows regenerated, undone or rewound since it was exported; their other turns are written again by the next run",
            closed.retracted
        ));
    }
    let written: usize = closed.totals.samples.values().sum();
    if let Some(w) = closed.written.as_ref().filter(|w| !w.delivered) {
        report.info(format_args!(
            "the reader closed the output after {} of the {written} lines (`| head`): the rest were not delivered",
            w.delivered_lines
        ));
    }
    let missing: BTreeMap<&str, usize> = closed
        .totals
        .tokens
        .iter()
        .filter(|(_, t)| t.tool_definitions_missing > 0)
        .map(|(c, t)| (*c, t.tool_definitions_missing))
        .collect();
    if !missing.is_empty() {
        report.warn(format_args!(
            "{} line(s) without a called tool's definition (no session of this home recorded it; written anyway): {}",
            missing.values().sum::<usize>(),
            counts(&missing)
        ));
    }
}
