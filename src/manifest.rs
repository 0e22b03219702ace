//! `manifest.json` of a directory export, typed to match
//! `schemas/manifest.schema.json` (field order is the file's order), and
//! the per-run totals it and the summary are made of.
//!
//! `dataset` describes the whole cumulative output (every night), from
//! running sums the state keeps ([`Dataset`]); `counts`, `tokens` and
//! `time_range` describe the last run. `forget` and retraction subtract
//! the lines they remove (their [`LineFigures`], kept in the state) and
//! recount the time range from the `meta` of the lines that remain.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::ExportConfig;
use crate::dataset::{Dataset, DatasetTokens};
use crate::format::tools::ToolsPolicy;
use crate::model::Channel;
use crate::rebuild::RebuildStats;
use crate::report::Report;
use crate::state::Written;
use crate::time::iso_time;
use crate::tokens::{Count, TemplateDoc};

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

    /// A line written whose turns span `(first, last)` (as its `meta`
    /// gives them): the time range covers both ends.
    pub fn saw_time(&mut self, (first, last): (Option<f64>, Option<f64>)) {
        for t in [first, last].into_iter().flatten() {
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

/// The manifest's shape (version 2: `dataset`, units in `split`).
pub const MANIFEST_SCHEMA_VERSION: u32 = 2;

fn add_all<'k>(into: &mut BTreeMap<String, u64>, from: impl IntoIterator<Item = (&'k str, usize)>) {
    for (k, n) in from {
        *into.entry(k.to_string()).or_default() += n as u64;
    }
}

/// What a run adds to the sums, and the manifest's view of them.
impl Dataset {
    /// `previous` with the run `w` added.
    pub fn after_run(previous: &Dataset, i: &Inputs<'_>, w: &Written) -> Dataset {
        let mut d = previous.clone();
        for (name, c) in &w.files {
            d.lines.insert(name.clone(), c.lines);
        }
        if !w.files.is_empty() && w.files.len() == 2 {
            d.units.insert("train".into(), w.units.totals.0);
            d.units.insert("valid".into(), w.units.totals.1);
        }
        add_all(
            &mut d.samples,
            i.totals.samples.iter().map(|(k, v)| (*k, *v)),
        );
        add_all(
            &mut d.signals,
            i.totals.signals.iter().map(|(k, v)| (*k, *v)),
        );
        add_all(
            &mut d.skipped,
            i.report.skipped.iter().map(|(k, v)| (*k, *v)),
        );
        add_all(
            &mut d.redactions,
            i.redactions.iter().map(|(k, v)| (*k, *v)),
        );
        for (channel, t) in i.totals.tokens.iter().filter(|(_, t)| t.samples > 0) {
            let sum = d.tokens.entry(channel.to_string()).or_default();
            sum.samples += t.samples as u64;
            sum.total += t.total as u64;
            sum.trainable += t.trainable as u64;
        }
        d.saw(i.totals.first);
        d.saw(i.totals.last);
        d.nights += u64::from(w.new_lines > 0);
        d
    }

    pub fn doc(&self) -> DatasetDoc<'_> {
        DatasetDoc {
            lines: &self.lines,
            units: &self.units,
            samples: &self.samples,
            signals: &self.signals,
            time_range: TimeRange {
                first: time(self.first),
                last: time(self.last),
            },
            skipped: &self.skipped,
            redactions: &self.redactions,
            tokens: &self.tokens,
            forgotten_lines: self.forgotten_lines,
            retracted_lines: self.retracted_lines,
            nights: self.nights,
        }
    }
}

/// The manifest's `dataset` section.
#[derive(Debug, Serialize)]
pub struct DatasetDoc<'a> {
    pub lines: &'a BTreeMap<String, u64>,
    pub units: &'a BTreeMap<String, u64>,
    pub samples: &'a BTreeMap<String, u64>,
    pub signals: &'a BTreeMap<String, u64>,
    pub time_range: TimeRange,
    pub skipped: &'a BTreeMap<String, u64>,
    pub redactions: &'a BTreeMap<String, u64>,
    pub tokens: &'a BTreeMap<String, DatasetTokens>,
    pub forgotten_lines: u64,
    pub retracted_lines: u64,
    pub nights: u64,
}

#[derive(Debug, Serialize)]
pub struct Manifest<'a> {
    pub schema_version: u32,
    pub tool: &'static str,
    pub version: &'static str,
    pub format: &'static str,
    pub cumulative: bool,
    pub flags: Vec<String>,
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
    /// The whole cumulative output.
    pub dataset: DatasetDoc<'a>,
}

#[derive(Debug, Clone, Serialize)]
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
    /// What the rebuild left out of the sessions read.
    pub history: HistoryDoc,
    /// Only in a run that re-checked the covered turns (see `recheck`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rechecked: Option<Rechecked>,
}

/// The manifest's `counts.rechecked`: the state's export rules and this
/// run's, and what the re-check wrote (turns: pairs for DPO).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rechecked {
    pub rules_before: u32,
    pub rules: u32,
    pub lines: u64,
    pub turns: u64,
}

/// The manifest's `counts.history`.
#[derive(Debug, Serialize)]
pub struct HistoryDoc {
    pub summaries: usize,
    pub compaction_copies: usize,
    pub undone_rows: usize,
    pub harness_rows: usize,
    pub merged_user_turns: usize,
}

impl From<&RebuildStats> for HistoryDoc {
    fn from(s: &RebuildStats) -> HistoryDoc {
        HistoryDoc {
            summaries: s.summaries,
            compaction_copies: s.compaction_copies,
            undone_rows: s.undone_rows,
            harness_rows: s.harness_rows,
            merged_user_turns: s.merged_user_turns,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Tokens<'a> {
    pub counted_with: &'a str,
    pub exact: bool,
    pub max_tokens: usize,
    pub trainer_max_length_at_least: usize,
    pub tools_policy: &'static str,
    pub system_prompt_policy: &'static str,
    /// Called tools' definitions borrowed from other sessions of the home.
    pub definitions_borrowed: usize,
    /// Samples per system prompt they carry (the policy's, or a shorter
    /// one it fell back to).
    pub system_prompts: BTreeMap<&'static str, usize>,
    /// The chat template counted with (`--tokenizer`), else null.
    pub template: Option<TemplateDoc>,
    pub channels: BTreeMap<&'static str, ChannelTokens>,
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
    /// Units per split, and those placed in the last run.
    pub units: BTreeMap<&'static str, u64>,
    pub new_units: BTreeMap<&'static str, u64>,
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
    /// What each store contributed (see `cmd::export`).
    pub sources: &'a [SourceEntry],
    pub report: &'a Report,
    pub totals: &'a Totals,
    pub redactions: &'a BTreeMap<&'static str, usize>,
    pub watermark: i64,
    pub counting: Counting<'a>,
    pub curation: crate::curate::CurationDoc,
    pub rechecked: Option<Rechecked>,
}

impl<'a> Manifest<'a> {
    pub fn new(i: &Inputs<'a>, w: &Written, d: &'a Dataset) -> Manifest<'a> {
        let cfg = i.cfg;
        Manifest {
            schema_version: MANIFEST_SCHEMA_VERSION,
            tool: "hermes-harvest",
            version: env!("CARGO_PKG_VERSION"),
            format: cfg.shape.as_str(),
            cumulative: cfg.state.is_some(),
            flags: cfg.flags.iter().map(|f| tilde(f)).collect(),
            sources: i.sources.to_vec(),
            counts: Counts {
                channels: i.totals.per_channel(cfg),
                signals: cfg.shape.is_dpo().then(|| i.totals.per_signal(cfg)),
                skipped: &i.report.skipped,
                new_lines: w.new_lines,
                history: (&i.totals.history).into(),
                rechecked: i.rechecked,
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
                by: "unit",
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
                units: [("train", w.units.totals.0), ("valid", w.units.totals.1)].into(),
                new_units: [
                    ("train", w.new_units.0 - w.new_units.1),
                    ("valid", w.new_units.1),
                ]
                .into(),
            },
            created: time(Some(chrono::Utc::now().timestamp() as f64)),
            curation: i.curation.clone(),
            dataset: d.doc(),
        }
    }
}

/// `s` with every `/home/<name>` and `/Users/<name>` written as `~`: the
/// manifest travels with the data and names no account.
pub fn tilde(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = ["/home/", "/Users/"]
        .iter()
        .filter_map(|p| rest.find(p).map(|i| (i, p.len())))
        .min()
    {
        let (i, plen) = at;
        out.push_str(&rest[..i]);
        let after = &rest[i + plen..];
        let name_end = after.find('/').unwrap_or(after.len());
        if name_end == 0 {
            out.push_str(&rest[i..i + plen]);
        } else {
            out.push('~');
        }
        rest = &after[name_end..];
    }
    out.push_str(rest);
    out
}

fn time(t: Option<f64>) -> Option<String> {
    iso_time(t).as_str().map(str::to_owned)
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
        definitions_borrowed: i.totals.definitions_borrowed,
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

#[cfg(test)]
mod tests {
    use super::tilde;

    #[test]
    fn no_account_name_is_written() {
        assert_eq!(
            tilde("--out=/home/ann/data/ --state /Users/bo/s.json"),
            "--out=~/data/ --state ~/s.json"
        );
        assert_eq!(tilde("/home/ann"), "~");
        assert_eq!(tilde("/tmp/x /home/"), "/tmp/x /home/");
    }
}
