//! The config mapping: clap's parsed arguments → each command's clap-free
//! configuration. Ranges were already checked by clap's value parsers; what
//! needs the file system or the clock (a prompt file, relative times) is
//! read here, before the command runs.

use std::path::PathBuf;

use anyhow::Result;

use super::{
    ChannelArg, DpoStyleArg, EstimateFamilyArg, EventKindArg, ExcludeArg, ExportArgs, ForgetArgs,
    FormatArg, HomeArgs, SendArgs, ShapeArg, SignalArg, SourcesArgs, TargetArg, ToolsArg,
    ValidateArgs,
};
use crate::config::{
    EstimateChoice, ExportConfig, ForgetConfig, OutTarget, SendConfig, SourcesConfig,
    ValidateConfig, parse_when, part_rows_from_env,
};
use crate::format::SystemPolicy;
use crate::format::tools::ToolsPolicy;
use crate::home::HomeChoice;
use crate::model::{Channel, Listed};
use crate::rebuild::Signal;
use crate::send::event::EventKind;
use crate::shape::Shape;
use crate::tokens::family::Family;

impl HomeArgs {
    fn choice(&self) -> HomeChoice {
        HomeChoice {
            dir: self.hermes_home.clone(),
            profile: self.profile.clone(),
        }
    }
}

impl ChannelArg {
    fn domain(self) -> Channel {
        match self {
            ChannelArg::Nexus => Channel::Nexus,
            ChannelArg::Telegram => Channel::Telegram,
            ChannelArg::Tui => Channel::Tui,
            ChannelArg::Other => Channel::Other,
        }
    }
}

impl ExcludeArg {
    fn domain(self) -> Listed {
        match self {
            ExcludeArg::Hidden => Listed::Hidden,
            ExcludeArg::Archived => Listed::Archived,
            ExcludeArg::AutoArchived => Listed::AutoArchived,
            ExcludeArg::Pinned => Listed::Pinned,
        }
    }
}

impl SignalArg {
    fn domain(self) -> Signal {
        match self {
            SignalArg::Rewind => Signal::Rewind,
            SignalArg::Regenerate => Signal::Regenerate,
            SignalArg::ToolRetry => Signal::ToolRetry,
        }
    }
}

impl ToolsArg {
    fn domain(self) -> ToolsPolicy {
        match self {
            ToolsArg::Used => ToolsPolicy::Used,
            ToolsArg::All => ToolsPolicy::All,
            ToolsArg::None => ToolsPolicy::None,
        }
    }
}

impl ShapeArg {
    fn domain(self) -> Shape {
        match self {
            ShapeArg::Sft => Shape::Sft,
            ShapeArg::Dpo => Shape::Dpo,
            ShapeArg::DpoFlat => Shape::DpoFlat,
        }
    }
}

impl EventKindArg {
    fn domain(self) -> EventKind {
        match self {
            EventKindArg::ArchonEntering => EventKind::ArchonEntering,
            EventKindArg::ArchonMaterialized => EventKind::ArchonMaterialized,
            EventKindArg::ArchonDeparted => EventKind::ArchonDeparted,
            EventKindArg::SceneChange => EventKind::SceneChange,
            EventKindArg::Tick => EventKind::Tick,
        }
    }
}

/// Sorted, without repeats.
fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v.dedup();
    v
}

impl ExportArgs {
    /// The export configuration; `now` anchors relative times (`7d`).
    pub fn config(&self, now: f64) -> Result<ExportConfig> {
        let system = SystemPolicy::from_flag(&self.system_prompt)?;
        let system_file =
            matches!(system, SystemPolicy::Fixed(_)).then(|| PathBuf::from(&self.system_prompt));
        let when = |s: &Option<String>| s.as_deref().map(|s| parse_when(s, now)).transpose();
        let signals = if self.signals.is_empty() {
            vec![Signal::Rewind, Signal::Regenerate, Signal::ToolRetry]
        } else {
            self.signals.iter().map(|s| s.domain()).collect()
        };
        Ok(ExportConfig {
            home: self.home.choice(),
            shape: match (self.format, self.dpo_style) {
                (FormatArg::Sft, _) => Shape::Sft,
                (FormatArg::Dpo, DpoStyleArg::Conversational) => Shape::Dpo,
                (FormatArg::Dpo, DpoStyleArg::Flat) => Shape::DpoFlat,
            },
            channels: sorted(self.channel.iter().map(|c| c.domain()).collect()),
            sources: self.source.clone(),
            sessions: self.session.clone(),
            models: self.model.clone(),
            exclude: sorted(self.exclude.iter().map(|e| e.domain()).collect()),
            since: when(&self.since)?,
            until: when(&self.until)?,
            min_turns: self.min_turns,
            max_tokens: self.max_tokens,
            tokenizer: self.tokenizer.clone(),
            estimate: match self.estimate_family {
                EstimateFamilyArg::Auto => EstimateChoice::Auto,
                EstimateFamilyArg::Generic => EstimateChoice::Generic,
                EstimateFamilyArg::Qwen => EstimateChoice::Family(Family::Qwen),
                EstimateFamilyArg::Llama3 => EstimateChoice::Family(Family::Llama3),
            },
            tools: self.tools.domain(),
            distractors: self.distractors,
            sft_context: self.sft_context,
            system,
            system_file,
            include_reasoning: self.include_reasoning,
            string_arguments: self.target == TargetArg::Openai,
            signals: sorted(signals),
            nexus_prefix: self.nexus_prefix.clone(),
            out: OutTarget::from_flag(&self.out),
            valid_fraction: self.valid_fraction,
            state: self.state.clone(),
            redact: !self.no_redact,
            strict: self.strict,
            skip_unrenderable: self.skip_unrenderable,
            fail_on_empty: self.fail_on_empty,
            quiet: self.quiet,
            fail_on_drop: self.fail_on_drop,
            fold_system: self.fold_system,
            threads: self.threads.unwrap_or_else(crate::pool::default_threads),
            part_rows: part_rows_from_env(),
            flags: std::env::args().skip(1).collect(),
            curate: crate::curate::Settings {
                // The OpenAI fine-tuning API rejects unknown keys.
                meta: !self.no_meta && self.target != TargetArg::Openai,
                dedupe: !self.keep_duplicates,
                near_cap: self.near_duplicate_cap,
                min_reply_chars: self.min_reply_chars,
                dry_run: self.dry_run,
            },
        })
    }
}

impl ForgetArgs {
    pub fn config(&self) -> ForgetConfig {
        ForgetConfig {
            sessions: self.sessions.clone(),
            before: self.before.clone(),
            out: self.out.clone(),
            state: self.state.clone(),
            force: self.force,
            dry_run: self.dry_run,
            quiet: self.quiet,
        }
    }
}

impl SourcesArgs {
    pub fn config(&self) -> SourcesConfig {
        SourcesConfig {
            home: self.home.choice(),
            nexus_prefix: self.nexus_prefix.clone(),
            json: self.json,
        }
    }
}

impl ValidateArgs {
    pub fn config(&self) -> ValidateConfig {
        ValidateConfig {
            file: self.file.clone(),
            shape: self.format.map(ShapeArg::domain),
            max_tokens: self.max_tokens,
            tokenizer: self.tokenizer.clone(),
            state: self.state.clone(),
            quiet: self.quiet,
        }
    }
}

impl SendArgs {
    pub fn config(&self) -> SendConfig {
        SendConfig {
            kind: self.kind.map(EventKindArg::domain),
            event: self.event.clone(),
            actor: self.actor.clone(),
            at: self.at.clone(),
            detail: self.detail.clone(),
            world: self.world.clone(),
            session: self.session.clone(),
            url: self.url.clone(),
            json: self.json,
            verify: self.verify,
            timeout_secs: self.timeout,
            verify_timeout_secs: self.verify_timeout,
            home: self.home.choice(),
            quiet: self.quiet,
            cacert: self.cacert.clone(),
            insecure_http: self.insecure_http,
        }
    }
}
