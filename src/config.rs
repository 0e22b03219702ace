//! Validated, clap-free settings of every command (built from the command
//! line by `cli::map`), and the helpers that read flag values.

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::format::tools::ToolsPolicy;
use crate::format::{FormatOptions, MsgOptions, SystemPolicy};
use crate::home::HomeChoice;
use crate::model::Channel;
use crate::rebuild::Signal;
use crate::send::event::EventKind;
use crate::shape::Shape;

/// Where the output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutTarget {
    Stdout,
    File(PathBuf),
    Dir(PathBuf),
}

impl OutTarget {
    /// `-` is stdout; a name ending in `/` or an existing directory is a
    /// directory; anything else a file.
    pub fn from_flag(out: &str) -> OutTarget {
        if out == "-" {
            OutTarget::Stdout
        } else if out.ends_with('/') || std::path::Path::new(out).is_dir() {
            OutTarget::Dir(PathBuf::from(out))
        } else {
            OutTarget::File(PathBuf::from(out))
        }
    }
}

/// `--estimate-family`: the estimate used without `--tokenizer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EstimateChoice {
    /// The family of the model Hermes serves, if known; else generic.
    Auto,
    /// The conservative estimate, never under any measured tokenizer.
    Generic,
    Family(crate::tokens::family::Family),
}

/// `export`'s settings. Value ranges (`max_tokens` at least 64, shares and
/// fractions in range) are checked where the command line is read.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    pub home: HomeChoice,
    pub shape: Shape,
    /// Sorted, without repeats; empty means all.
    pub channels: Vec<Channel>,
    pub sources: Vec<String>,
    pub sessions: Vec<String>,
    pub models: Vec<String>,
    /// Listing flags whose sessions are left out; sorted, without repeats.
    pub exclude: Vec<crate::model::Listed>,
    pub since: Option<f64>,
    pub until: Option<f64>,
    pub min_turns: usize,
    pub max_tokens: usize,
    pub tokenizer: Option<PathBuf>,
    /// Which estimate counts without `tokenizer`.
    pub estimate: EstimateChoice,
    pub tools: ToolsPolicy,
    /// Other offered tools a sample carries at most (`--tools used`).
    pub distractors: usize,
    pub sft_context: f64,
    pub system: SystemPolicy,
    /// The file `--system-prompt` named, if it named one.
    pub system_file: Option<PathBuf>,
    pub include_reasoning: bool,
    /// Tool-call arguments as JSON strings (OpenAI flavour).
    pub string_arguments: bool,
    /// Sorted, without repeats.
    pub signals: Vec<Signal>,
    pub nexus_prefix: String,
    pub out: OutTarget,
    pub valid_fraction: f64,
    pub state: Option<PathBuf>,
    pub redact: bool,
    pub strict: bool,
    /// Samples the template fails on are consumed (skipped), not pending.
    pub skip_unrenderable: bool,
    /// Exit 6 when the export holds no line.
    pub fail_on_empty: bool,
    pub quiet: bool,
    /// Exit with [`crate::exit::DROPPED`] when anything selected was dropped.
    pub fail_on_drop: bool,
    /// The system prompt goes into the first user turn (templates without
    /// a system role).
    pub fold_system: bool,
    /// Worker threads for the sessions (1: none besides the reader's).
    pub threads: usize,
    /// Rows of a long state.db session per part (`HERMES_HARVEST_PART_ROWS`,
    /// for tests).
    pub part_rows: usize,
    /// The command line as given, for the manifest.
    pub flags: Vec<String>,
    /// Provenance, duplicates, quality rules, dry run.
    pub curate: crate::curate::Settings,
}

impl ExportConfig {
    /// What the formatters need.
    pub fn format_options(&self) -> FormatOptions {
        FormatOptions {
            msg: MsgOptions {
                string_arguments: self.string_arguments,
                include_reasoning: self.include_reasoning,
            },
            max_tokens: self.max_tokens,
            tools: self.tools,
            distractors: self.distractors,
            sft_context: self.sft_context,
            signals: self.signals.clone(),
            flat_dpo: self.shape == Shape::DpoFlat,
            fold_system: self.fold_system,
        }
    }
}

/// Rows of a long state.db session per part: `HERMES_HARVEST_PART_ROWS`
/// (tests use small parts), else the default.
pub fn part_rows_from_env() -> usize {
    std::env::var("HERMES_HARVEST_PART_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(crate::source::state_db::PART_ROWS)
}

/// `forget`'s settings.
#[derive(Debug, Clone)]
pub struct ForgetConfig {
    /// Session ids to remove.
    pub sessions: Vec<String>,
    /// Also lines whose first turn is before this time (`--since` forms,
    /// read when the command runs).
    pub before: Option<String>,
    /// The cumulative output: `FILE.jsonl` or `DIR/`.
    pub out: String,
    /// The state file of that output.
    pub state: PathBuf,
    /// Record ids that nothing knows.
    pub force: bool,
    /// List what would go; change nothing.
    pub dry_run: bool,
    pub quiet: bool,
}

/// `sources`' settings.
#[derive(Debug, Clone)]
pub struct SourcesConfig {
    pub home: HomeChoice,
    pub nexus_prefix: String,
    pub json: bool,
}

/// `validate`'s settings.
#[derive(Debug, Clone)]
pub struct ValidateConfig {
    /// The file, or `-` for stdin.
    pub file: String,
    /// Expected shape; `None` takes the first line's.
    pub shape: Option<Shape>,
    pub max_tokens: Option<usize>,
    pub tokenizer: Option<PathBuf>,
    /// A directory's state file, to check its committed lengths and tails.
    pub state: Option<PathBuf>,
    pub quiet: bool,
}

/// `send`'s settings.
#[derive(Debug, Clone)]
pub struct SendConfig {
    pub kind: Option<EventKind>,
    /// An event file, or `-` for stdin.
    pub event: Option<String>,
    pub actor: Option<String>,
    pub at: Option<String>,
    pub detail: Option<String>,
    pub world: String,
    pub session: Option<String>,
    pub url: Option<String>,
    pub json: bool,
    pub verify: bool,
    pub timeout_secs: u64,
    pub verify_timeout_secs: u64,
    pub home: HomeChoice,
    pub quiet: bool,
    /// `--cacert`: trust this PEM file's certificates instead of the system's.
    pub cacert: Option<PathBuf>,
    /// `--insecure-http`: allow the key over plain HTTP beyond loopback.
    pub insecure_http: bool,
}

/// `2026-11-01`, RFC 3339, or a duration back from now: `90m`, `12h`, `7d`, `2w`.
pub fn parse_when(s: &str, now: f64) -> Result<f64> {
    let s = s.trim();
    if let Some(unit) = s.chars().last().filter(|c| c.is_ascii_alphabetic())
        && let Ok(n) = s[..s.len() - 1].parse::<f64>()
    {
        let secs = match unit {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            'd' => 86400.0,
            'w' => 7.0 * 86400.0,
            _ => bail!("unknown duration unit in {s:?} (use s, m, h, d or w)"),
        };
        return Ok(now - n * secs);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_micros() as f64 / 1e6);
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp() as f64);
    }
    bail!("cannot read time {s:?}: use 2026-11-01, an RFC 3339 time, or a duration such as 7d")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(
            parse_when("7d", 1_000_000.0).unwrap(),
            1_000_000.0 - 604_800.0
        );
        assert_eq!(parse_when("1970-01-02", 0.0).unwrap(), 86400.0);
        assert_eq!(parse_when("1970-01-01T00:01:00Z", 0.0).unwrap(), 60.0);
        assert!(parse_when("soon", 0.0).is_err());
        assert!(parse_when("3y", 0.0).is_err());
    }
}
