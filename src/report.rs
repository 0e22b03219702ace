//! Warnings, skip counters and the lines of the summary, all on stderr.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::skip::Skip;

/// Collects what happened during a run. Warnings about unreadable inputs
/// make the run "partial"; with `--strict` they are fatal.
#[derive(Debug)]
pub struct Report {
    strict: bool,
    quiet: bool,
    bar: ProgressBar,
    /// Some input (file, line, row) could not be read and was skipped.
    pub partial: bool,
    /// Sessions read, per store.
    pub sessions_read: BTreeMap<&'static str, usize>,
    /// Sessions another store read that this store added to (Responses
    /// `instructions`, tool definitions or a system prompt), per store.
    pub sessions_enriched: BTreeMap<&'static str, usize>,
    /// What was left out, per reason.
    pub skipped: BTreeMap<&'static str, usize>,
}

impl Report {
    pub fn new(strict: bool, quiet: bool) -> Report {
        Report {
            strict,
            quiet,
            bar: ProgressBar::hidden(),
            partial: false,
            sessions_read: BTreeMap::new(),
            sessions_enriched: BTreeMap::new(),
            skipped: BTreeMap::new(),
        }
    }

    /// Shows a progress bar of `len` steps on stderr, only when stderr is a
    /// terminal and the run is not quiet.
    pub fn start_progress(&mut self, len: u64, what: &str) {
        if self.quiet || !self.on_terminal() {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} ({eta})")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_string());
        self.bar = bar;
    }

    pub fn tick(&self) {
        self.bar.inc(1);
    }

    pub fn finish_progress(&self) {
        self.bar.finish_and_clear();
    }

    /// An input that could not be read: warn with its name and go on, or
    /// fail with `--strict`.
    pub fn input_problem(&mut self, what: impl std::fmt::Display) -> Result<()> {
        if self.strict {
            bail!("{} (--strict)", clean(&what.to_string()));
        }
        self.partial = true;
        *self
            .skipped
            .entry(Skip::UnreadableInput.as_str())
            .or_default() += 1;
        self.warn(format_args!("{what}; skipped"));
        Ok(())
    }

    /// A warning that does not make the run partial.
    pub fn warn(&self, what: impl std::fmt::Display) {
        if !self.quiet {
            let text = what.to_string();
            let text = clean(&text);
            self.bar
                .suspend(|| eprintln!("hermes-harvest: warning: {text}"));
        }
    }

    /// A warning that `--quiet` keeps (as it keeps errors).
    pub fn alert(&self, what: impl std::fmt::Display) {
        let text = what.to_string();
        let text = clean(&text);
        self.bar
            .suspend(|| eprintln!("hermes-harvest: warning: {text}"));
    }

    /// A line of information (summary), hidden by `--quiet`.
    pub fn info(&self, what: impl std::fmt::Display) {
        if !self.quiet {
            let text = what.to_string();
            let text = clean(&text);
            self.bar.suspend(|| eprintln!("hermes-harvest: {text}"));
        }
    }

    /// Whether stderr is a terminal (a person reads it), not a log or cron.
    pub fn on_terminal(&self) -> bool {
        std::io::IsTerminal::is_terminal(&std::io::stderr())
    }

    /// Lines of information printed as one block, the later ones indented
    /// under the first; hidden by `--quiet`.
    pub fn info_block(&self, lines: &[String]) {
        if self.quiet {
            return;
        }
        self.bar.suspend(|| {
            for (i, line) in lines.iter().enumerate() {
                let lead = if i == 0 { "hermes-harvest: " } else { "  " };
                eprintln!("{lead}{}", clean(line));
            }
        });
    }

    pub fn skip(&mut self, reason: Skip) {
        self.skip_n(reason, 1);
    }

    pub fn skip_n(&mut self, reason: Skip, n: usize) {
        if n > 0 {
            *self.skipped.entry(reason.as_str()).or_default() += n;
        }
    }

    pub fn read_session(&mut self, store: &'static str) {
        *self.sessions_read.entry(store).or_default() += 1;
    }

    pub fn enriched_session(&mut self, store: &'static str) {
        *self.sessions_enriched.entry(store).or_default() += 1;
    }
}

/// Text for the terminal: control characters (ANSI escapes, OSC titles,
/// carriage returns, C1 controls) and bidirectional overrides from stored
/// data or a server are shown escaped, never sent raw.
pub fn clean(s: &str) -> std::borrow::Cow<'_, str> {
    let bad =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !s.chars().any(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if bad(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `a=1 b=2`, or `none` for an empty map.
pub fn counts<K: std::fmt::Display>(map: &BTreeMap<K, usize>) -> String {
    if map.is_empty() {
        return "none".to_string();
    }
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}
