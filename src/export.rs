//! The `export` pipeline: stores → sessions → rebuilt conversations →
//! selection → formatter → sink, with a summary on stderr.

use std::collections::BTreeMap;

use anyhow::Result;

use crate::cli::ExportArgs;
use crate::config::{ExportConfig, Format, OutTarget};
use crate::exit;
use crate::format::{self, sft};
use crate::home::HermesHome;
use crate::model::{Channel, Session};
use crate::rebuild::{self, RebuildStats};
use crate::report::{Report, counts};
use crate::sink::Sink;
use crate::source::{Stores, head_of};

/// Totals for the summary line.
#[derive(Debug, Default)]
pub struct Totals {
    pub samples: BTreeMap<&'static str, usize>,
    pub history: RebuildStats,
}

pub fn run(args: &ExportArgs) -> Result<u8> {
    let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
    let cfg = ExportConfig::from_args(args, now)?;
    let home = HermesHome::resolve(&args.home)?;
    let mut report = Report::new(cfg.strict, cfg.quiet);
    let stores = Stores::open(&home, &mut report)?;

    let mut sink = match &cfg.out {
        OutTarget::Stdout => Sink::stdout(),
        OutTarget::File(path) => Sink::file(path)?,
        OutTarget::Dir(dir) => anyhow::bail!(
            "--out {}: directory output is not available yet; give a FILE.jsonl or -",
            dir.display()
        ),
    };
    if let Some(db) = &stores.state {
        let n: i64 = db
            .connection()
            .query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get(0))
            .unwrap_or(0);
        report.start_progress(n.max(0) as u64, "exporting");
    }
    let mut totals = Totals::default();
    stores.each_session(&mut report, &|h| cfg.wants(h), &mut |session, report| {
        report.tick();
        export_session(&session, &cfg, report, &mut totals, &mut sink)
    })?;
    report.finish_progress();
    sink.finish()?;
    summarize(&report, &totals, &cfg);
    Ok(if report.partial {
        exit::PARTIAL
    } else {
        exit::OK
    })
}

fn export_session(
    session: &Session,
    cfg: &ExportConfig,
    report: &mut Report,
    totals: &mut Totals,
    sink: &mut Sink,
) -> Result<()> {
    let channel = cfg.channel_of(&head_of(session));
    let rebuilt = rebuild::rebuild(session);
    add_stats(&mut totals.history, &rebuilt.stats);
    let exchanges = format::exchanges(&rebuilt.messages);
    let selected: Vec<bool> = exchanges
        .iter()
        .map(|e| cfg.in_window(e.timestamp.or(session.started_at)))
        .collect();
    let complete = exchanges
        .iter()
        .zip(&selected)
        .filter(|(e, s)| **s && e.problem.is_none())
        .count();
    if complete < cfg.min_turns {
        report.skip(if complete == 0 {
            "no_complete_turn"
        } else {
            "too_few_turns"
        });
        return Ok(());
    }
    match cfg.format {
        Format::Sft => {
            let outcome = sft::samples(session, &exchanges, &selected, cfg);
            for reason in outcome.skipped {
                report.skip(reason);
            }
            for line in outcome.lines {
                let bytes = serde_json::to_vec(&line)?;
                sink.line(&bytes)?;
                *totals.samples.entry(channel.as_str()).or_default() += 1;
            }
        }
        Format::Dpo => anyhow::bail!("--format dpo is not available yet"),
    }
    Ok(())
}

fn add_stats(total: &mut RebuildStats, s: &RebuildStats) {
    total.summaries += s.summaries;
    total.compaction_copies += s.compaction_copies;
    total.undone_rows += s.undone_rows;
    total.harness_rows += s.harness_rows;
    total.merged_user_turns += s.merged_user_turns;
}

fn summarize(report: &Report, totals: &Totals, cfg: &ExportConfig) {
    let written: usize = totals.samples.values().sum();
    let per_channel: BTreeMap<&str, usize> = Channel::ALL
        .iter()
        .filter(|c| cfg.channels.is_empty() || cfg.channels.contains(c))
        .map(|c| {
            (
                c.as_str(),
                totals.samples.get(c.as_str()).copied().unwrap_or(0),
            )
        })
        .collect();
    let h = &totals.history;
    report.info(format_args!(
        "read {} sessions ({}); wrote {written} {} samples ({}); skipped: {}; history: {} summaries and {} compaction copies dropped, {} undone rows left out",
        report.sessions_read.values().sum::<usize>(),
        counts(&report.sessions_read),
        match cfg.format {
            Format::Sft => "sft",
            Format::Dpo => "dpo",
        },
        counts(&per_channel),
        counts(&report.skipped),
        h.summaries,
        h.compaction_copies,
        h.undone_rows,
    ));
}
