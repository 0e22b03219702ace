//! Validated, clap-free settings for `export`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::cli::{ChannelArg, DpoStyleArg, ExportArgs, FormatArg, SignalArg, TargetArg, ToolsArg};
use crate::format::tools::ToolsPolicy;
use crate::format::{FormatOptions, MsgOptions};
use crate::model::Channel;
use crate::rebuild::Signal;
use crate::source::state_db::SessionHead;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemPolicy {
    /// What the session ran with (Hermes's prompt plus Responses instructions).
    Session,
    /// Only the persona part of the stored prompt; `SOUL.md`'s text when
    /// known (filled in once the home is known).
    Soul(Option<String>),
    None,
    /// Replaced by this text.
    Fixed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Sft,
    Dpo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpoStyle {
    Conversational,
    Flat,
}

/// Where the output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutTarget {
    Stdout,
    File(PathBuf),
    Dir(PathBuf),
}

#[derive(Debug, Clone)]
pub struct ExportConfig {
    pub format: Format,
    pub channels: Vec<Channel>,
    pub sources: Vec<String>,
    pub sessions: Vec<String>,
    pub models: Vec<String>,
    pub since: Option<f64>,
    pub until: Option<f64>,
    pub min_turns: usize,
    pub max_tokens: usize,
    pub tokenizer: Option<PathBuf>,
    pub tools: ToolsPolicy,
    pub sft_context: f64,
    pub system: SystemPolicy,
    pub include_reasoning: bool,
    /// Tool-call arguments as JSON strings (OpenAI flavour).
    pub string_arguments: bool,
    pub dpo_style: DpoStyle,
    pub signals: Vec<Signal>,
    pub nexus_prefix: String,
    pub out: OutTarget,
    pub valid_fraction: f64,
    pub state: Option<PathBuf>,
    pub redact: bool,
    pub strict: bool,
    pub quiet: bool,
    pub curate: crate::curate::Settings,
}

impl ExportConfig {
    pub fn from_args(a: &ExportArgs, now: f64) -> Result<ExportConfig> {
        let system = match a.system_prompt.as_str() {
            "session" => SystemPolicy::Session,
            "soul" => SystemPolicy::Soul(None),
            "none" => SystemPolicy::None,
            path => SystemPolicy::Fixed(
                std::fs::read_to_string(path)
                    .with_context(|| format!("--system-prompt: cannot read {path}"))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
        };
        if a.max_tokens < 64 {
            bail!("--max-tokens must be at least 64");
        }
        if !(0.0..1.0).contains(&a.valid_fraction) {
            bail!("--valid-fraction must be in [0, 1)");
        }
        let since = a.since.as_deref().map(|s| parse_when(s, now)).transpose()?;
        let until = a.until.as_deref().map(|s| parse_when(s, now)).transpose()?;
        let out = if a.out == "-" {
            OutTarget::Stdout
        } else if a.out.ends_with('/') || std::path::Path::new(&a.out).is_dir() {
            OutTarget::Dir(PathBuf::from(&a.out))
        } else {
            OutTarget::File(PathBuf::from(&a.out))
        };
        let mut channels: Vec<Channel> = a
            .channel
            .iter()
            .map(|c| match c {
                ChannelArg::Nexus => Channel::Nexus,
                ChannelArg::Telegram => Channel::Telegram,
                ChannelArg::Tui => Channel::Tui,
                ChannelArg::Other => Channel::Other,
            })
            .collect();
        channels.sort();
        channels.dedup();
        let mut signals: Vec<Signal> = if a.signals.is_empty() {
            vec![Signal::Rewind, Signal::Regenerate, Signal::ToolRetry]
        } else {
            a.signals
                .iter()
                .map(|s| match s {
                    SignalArg::Rewind => Signal::Rewind,
                    SignalArg::Regenerate => Signal::Regenerate,
                    SignalArg::ToolRetry => Signal::ToolRetry,
                })
                .collect()
        };
        signals.sort();
        signals.dedup();
        Ok(ExportConfig {
            format: match a.format {
                FormatArg::Sft => Format::Sft,
                FormatArg::Dpo => Format::Dpo,
            },
            channels,
            sources: a.source.clone(),
            sessions: a.session.clone(),
            models: a.model.clone(),
            since,
            until,
            min_turns: a.min_turns,
            max_tokens: a.max_tokens,
            tokenizer: a.tokenizer.clone(),
            tools: match a.tools {
                ToolsArg::Used => ToolsPolicy::Used,
                ToolsArg::All => ToolsPolicy::All,
                ToolsArg::None => ToolsPolicy::None,
            },
            sft_context: a.sft_context,
            system,
            include_reasoning: a.include_reasoning,
            string_arguments: a.target == TargetArg::Openai,
            dpo_style: match a.dpo_style {
                DpoStyleArg::Conversational => DpoStyle::Conversational,
                DpoStyleArg::Flat => DpoStyle::Flat,
            },
            signals,
            nexus_prefix: a.nexus_prefix.clone(),
            out,
            valid_fraction: a.valid_fraction,
            state: a.state.clone(),
            redact: !a.no_redact,
            strict: a.strict,
            quiet: a.quiet,
            curate: crate::curate::Settings {
                // The OpenAI fine-tuning API rejects unknown keys.
                meta: !a.no_meta && a.target != TargetArg::Openai,
                dedupe: !a.keep_duplicates,
                near_cap: a.near_duplicate_cap,
                min_reply_chars: a.min_reply_chars,
                dry_run: a.dry_run,
            },
        })
    }

    /// What the formatters need.
    pub fn format_options(&self) -> FormatOptions {
        FormatOptions {
            msg: MsgOptions {
                string_arguments: self.string_arguments,
                include_reasoning: self.include_reasoning,
            },
            max_tokens: self.max_tokens,
            tools: self.tools,
            sft_context: self.sft_context,
            signals: self.signals.clone(),
            flat_dpo: self.dpo_style == DpoStyle::Flat,
        }
    }

    pub fn channel_of(&self, h: &SessionHead) -> Channel {
        Channel::of(&h.source, &h.id, h.title.as_deref(), &self.nexus_prefix)
    }

    /// Session-level selection (before any message is read).
    pub fn wants(&self, h: &SessionHead) -> bool {
        (self.channels.is_empty() || self.channels.contains(&self.channel_of(h)))
            && (self.sources.is_empty() || self.sources.contains(&h.source))
            && (self.sessions.is_empty() || self.sessions.contains(&h.id))
            && (self.models.is_empty() || h.model.as_ref().is_some_and(|m| self.models.contains(m)))
    }

    /// Turn-level time window.
    pub fn in_window(&self, t: Option<f64>) -> bool {
        match t {
            Some(t) => self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u),
            None => self.since.is_none() && self.until.is_none(),
        }
    }
}

/// Epoch seconds as an RFC 3339 UTC time (`2026-11-25T13:25:44Z`), or null.
pub fn iso_time(t: Option<f64>) -> serde_json::Value {
    t.and_then(|t| chrono::DateTime::from_timestamp_micros((t * 1e6) as i64))
        .map_or(serde_json::Value::Null, |d| {
            serde_json::Value::String(d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        })
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
