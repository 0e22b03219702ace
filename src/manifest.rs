//! `manifest.json` of a directory export, typed to match
//! `schemas/manifest.schema.json` (field order is the file's order), and
//! the per-run totals it and the summary line are made of.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::{ExportConfig, iso_time};
use crate::format::tools::ToolsPolicy;
use crate::model::{Channel, Origin};
use crate::output::Written;
use crate::rebuild::RebuildStats;
use crate::report::Report;
use crate::source::Stores;
use crate::tokens::Count;

/// Token figures of one channel.
#[derive(Debug, Default, Clone, Copy)]
pub struct TokenTotals {
    pub samples: usize,
    pub total: usize,
    pub trainable: usize,
    pub last_turn: usize,
    pub longest: usize,
    pub system: usize,
    pub over_budget: usize,
    pub tool_definitions_missing: usize,
}

impl TokenTotals {
    /// Trainable tokens per token, rounded to three decimals.
    fn trainable_share(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            (self.trainable as f64 / self.total as f64 * 1000.0).round() / 1000.0
        }
    }
}

/// What a run wrote, for the summary and the manifest.
#[derive(Debug, Default)]
pub struct Totals {
    pub samples: BTreeMap<&'static str, usize>,
    pub signals: BTreeMap<&'static str, usize>,
    pub history: RebuildStats,
    pub first: Option<f64>,
    pub last: Option<f64>,
    pub tokens: BTreeMap<&'static str, TokenTotals>,
    /// The first chat-template failure, reported once.
    pub template_error: Option<String>,
    /// Definitions of called tools a session did not record, borrowed from
    /// another session of the home.
    pub definitions_borrowed: usize,
    /// Samples per system prompt they carry (`session`, `soul`, `none`, `file`).
    pub prompts: BTreeMap<&'static str, usize>,
    /// What was selected but could not be written (budget, template).
    pub drops: crate::format::drops::Drops,
}

impl Totals {
    pub fn wrote(&mut self, channel: Channel, count: Count, system_tokens: usize, missing: usize) {
        *self.samples.entry(channel.as_str()).or_default() += 1;
        let t = self.tokens.entry(channel.as_str()).or_default();
        t.samples += 1;
        t.total += count.total;
        t.trainable += count.trainable;
        t.last_turn += count.last_turn;
        t.longest = t.longest.max(count.total);
        t.system += system_tokens;
        t.tool_definitions_missing += usize::from(missing > 0);
    }

    pub fn saw_time(&mut self, t: Option<f64>) {
        if let Some(t) = t {
            self.first = Some(self.first.map_or(t, |f| f.min(t)));
            self.last = Some(self.last.map_or(t, |l| l.max(t)));
        }
    }

    pub fn add_history(&mut self, s: &RebuildStats) {
        let total = &mut self.history;
        total.summaries += s.summaries;
        total.compaction_copies += s.compaction_copies;
        total.undone_rows += s.undone_rows;
        total.harness_rows += s.harness_rows;
        total.merged_user_turns += s.merged_user_turns;
    }

    /// Samples per selected channel (every selected channel, zero or not).
    pub fn per_channel(&self, cfg: &ExportConfig) -> BTreeMap<&'static str, usize> {
        selected_channels(cfg)
            .map(|c| {
                (
                    c.as_str(),
                    self.samples.get(c.as_str()).copied().unwrap_or(0),
                )
            })
            .collect()
    }

    /// Pairs per mined signal.
    pub fn per_signal(&self, cfg: &ExportConfig) -> BTreeMap<&'static str, usize> {
        cfg.signals
            .iter()
            .map(|s| {
                (
                    s.as_str(),
                    self.signals.get(s.as_str()).copied().unwrap_or(0),
                )
            })
            .collect()
    }
}

fn selected_channels(cfg: &ExportConfig) -> impl Iterator<Item = &Channel> {
    Channel::ALL
        .iter()
        .filter(|c| cfg.channels.is_empty() || cfg.channels.contains(c))
}

#[derive(Debug, Serialize)]
pub struct Manifest<'a> {
    pub tool: &'static str,
    pub version: &'static str,
    pub format: &'static str,
    pub cumulative: bool,
    pub flags: &'a [String],
    pub sources: Vec<SourceEntry>,
    pub counts: Counts<'a>,
    pub tokens: Tokens<'a>,
    pub redactions: Option<&'a BTreeMap<&'static str, usize>>,
    pub time_range: TimeRange,
    pub watermark: Watermark,
    pub split: Split,
    /// When the run finished (RFC 3339 UTC).
    pub created: Option<String>,
    pub curation: crate::curate::CurationDoc,
}

#[derive(Debug, Serialize)]
pub struct SourceEntry {
    pub store: &'static str,
    pub path: String,
    pub schema_version: Option<i64>,
    /// Set when the schema is newer than this tool knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_note: Option<String>,
    pub sessions_read: usize,
    /// Sessions read from another store that this one added to.
    pub sessions_enriched: usize,
}

#[derive(Debug, Serialize)]
pub struct Counts<'a> {
    pub channels: BTreeMap<&'static str, usize>,
    pub signals: Option<BTreeMap<&'static str, usize>>,
    pub skipped: &'a BTreeMap<&'static str, usize>,
    pub new_lines: u64,
}

#[derive(Debug, Serialize)]
pub struct Tokens<'a> {
    pub counted_with: &'a str,
    pub exact: bool,
    pub max_tokens: usize,
    pub trainer_max_length_at_least: usize,
    pub tools_policy: &'static str,
    pub system_prompt_policy: &'static str,
    /// Samples per system prompt they carry (the policy's, or a shorter
    /// one it fell back to).
    pub system_prompts: BTreeMap<&'static str, usize>,
    /// The chat template counted with (`--tokenizer`), else null.
    pub template: Option<TemplateDoc>,
    pub channels: BTreeMap<&'static str, ChannelTokens>,
}

/// The chat template the exact counts used.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateDoc {
    pub source: String,
    pub generation_block: bool,
    /// How `trainable` was found: `generation_block` or `prefix_diff`.
    pub trainable_by: &'static str,
}

#[derive(Debug, Serialize)]
pub struct ChannelTokens {
    pub samples: usize,
    pub total: usize,
    pub trainable: usize,
    pub trainable_share: f64,
    pub trainable_last_turn: usize,
    pub longest: usize,
    pub system: usize,
    pub over_budget: usize,
    pub tool_definitions_missing: usize,
}

#[derive(Debug, Serialize)]
pub struct TimeRange {
    pub first: Option<String>,
    pub last: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Watermark {
    pub state_db_message_id: i64,
}

#[derive(Debug, Serialize)]
pub struct Split {
    pub valid_fraction: f64,
    pub by: &'static str,
    pub files: BTreeMap<String, FileCount>,
    pub forced_valid_sessions: usize,
}

#[derive(Debug, Serialize)]
pub struct FileCount {
    pub lines: u64,
    pub bytes: u64,
}

/// How the run counted tokens.
pub struct Counting<'a> {
    pub counted_with: &'a str,
    pub exact: bool,
    pub template: Option<TemplateDoc>,
}

/// Everything the manifest is made of.
pub struct Inputs<'a> {
    pub cfg: &'a ExportConfig,
    pub stores: &'a Stores,
    pub report: &'a Report,
    pub totals: &'a Totals,
    pub redactions: &'a BTreeMap<&'static str, usize>,
    pub watermark: i64,
    pub counting: Counting<'a>,
    pub curation: crate::curate::CurationDoc,
}

impl<'a> Manifest<'a> {
    pub fn new(i: &Inputs<'a>, w: &Written) -> Manifest<'a> {
        let cfg = i.cfg;
        Manifest {
            tool: "hermes-harvest",
            version: env!("CARGO_PKG_VERSION"),
            format: cfg.shape.as_str(),
            cumulative: cfg.state.is_some(),
            flags: &cfg.flags,
            sources: sources(i.stores, i.report),
            counts: Counts {
                channels: i.totals.per_channel(cfg),
                signals: cfg.shape.is_dpo().then(|| i.totals.per_signal(cfg)),
                skipped: &i.report.skipped,
                new_lines: w.new_lines,
            },
            tokens: tokens(i),
            redactions: cfg.redact.then_some(i.redactions),
            time_range: TimeRange {
                first: time(i.totals.first),
                last: time(i.totals.last),
            },
            watermark: Watermark {
                state_db_message_id: i.watermark,
            },
            split: Split {
                valid_fraction: cfg.valid_fraction,
                by: "session",
                files: w
                    .files
                    .iter()
                    .map(|(name, c)| {
                        let count = FileCount {
                            lines: c.lines,
                            bytes: c.bytes,
                        };
                        (name.clone(), count)
                    })
                    .collect(),
                forced_valid_sessions: w.forced_valid.len(),
            },
            created: time(Some(chrono::Utc::now().timestamp() as f64)),
            curation: i.curation.clone(),
        }
    }
}

fn time(t: Option<f64>) -> Option<String> {
    iso_time(t).as_str().map(str::to_owned)
}

fn sources(stores: &Stores, report: &Report) -> Vec<SourceEntry> {
    let read = |o: Origin| report.sessions_read.get(o.as_str()).copied().unwrap_or(0);
    let enriched = |store: &str| report.sessions_enriched.get(store).copied().unwrap_or(0);
    let mut out = Vec::new();
    if let Some(db) = &stores.state {
        out.push(SourceEntry {
            store: "state.db",
            path: db.path.display().to_string(),
            schema_version: db.schema_version,
            schema_note: db.schema_note(),
            sessions_read: read(Origin::StateDb),
            sessions_enriched: 0,
        });
    }
    if let Some(rs) = &stores.responses {
        out.push(SourceEntry {
            store: "response_store.db",
            path: rs.path.display().to_string(),
            schema_version: None,
            schema_note: None,
            sessions_read: read(Origin::ResponseStore),
            sessions_enriched: enriched("response_store.db"),
        });
    }
    out.push(SourceEntry {
        store: "sessions",
        path: stores.files.dir.display().to_string(),
        schema_version: None,
        schema_note: None,
        sessions_read: read(Origin::SessionJson) + read(Origin::Transcript),
        sessions_enriched: enriched("sessions"),
    });
    out
}

fn tokens<'a>(i: &Inputs<'a>) -> Tokens<'a> {
    let cfg = i.cfg;
    Tokens {
        counted_with: i.counting.counted_with,
        exact: i.counting.exact,
        max_tokens: cfg.max_tokens,
        trainer_max_length_at_least: cfg.max_tokens,
        tools_policy: match cfg.tools {
            ToolsPolicy::Used => "used",
            ToolsPolicy::All => "all",
            ToolsPolicy::None => "none",
        },
        system_prompt_policy: cfg.system.as_str(),
        system_prompts: i.totals.prompts.clone(),
        template: i.counting.template.clone(),
        channels: selected_channels(cfg)
            .map(|c| {
                let t = i.totals.tokens.get(c.as_str()).copied().unwrap_or_default();
                let figures = ChannelTokens {
                    samples: t.samples,
                    total: t.total,
                    trainable: t.trainable,
                    trainable_share: t.trainable_share(),
                    trainable_last_turn: t.last_turn,
                    longest: t.longest,
                    system: t.system,
                    over_budget: t.over_budget,
                    tool_definitions_missing: t.tool_definitions_missing,
                };
                (c.as_str(), figures)
            })
            .collect(),
    }
}
