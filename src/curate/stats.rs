//! The figures `--dry-run` prints: per channel (and per signal for DPO),
//! the samples, sessions, time range and tokens a run would write.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use crate::tokens::Count;

#[derive(Debug, Default, Clone)]
struct Group {
    samples: usize,
    sessions: BTreeSet<String>,
    first: Option<f64>,
    last: Option<f64>,
    total: usize,
    trainable: usize,
    longest: usize,
}

/// Figures per (channel, signal); `signal` is empty for SFT.
#[derive(Debug, Default)]
pub struct DryRun {
    groups: BTreeMap<(&'static str, &'static str), Group>,
}

impl DryRun {
    /// One line that would be written.
    pub fn add(
        &mut self,
        (channel, signal): (&'static str, &'static str),
        session: &str,
        (first, last): (Option<f64>, Option<f64>),
        count: Count,
    ) {
        let g = self.groups.entry((channel, signal)).or_default();
        g.samples += 1;
        if !g.sessions.contains(session) {
            g.sessions.insert(session.to_string());
        }
        for t in [first, last].into_iter().flatten() {
            g.first = Some(g.first.map_or(t, |f| f.min(t)));
            g.last = Some(g.last.map_or(t, |l| l.max(t)));
        }
        g.total += count.total;
        g.trainable += count.trainable;
        g.longest = g.longest.max(count.total);
    }

    /// The report: one row per group, a total row, then the skips.
    pub fn render(
        &self,
        format: &str,
        counted: &str,
        skipped: &BTreeMap<&'static str, usize>,
    ) -> String {
        let time = |t: Option<f64>| match crate::time::iso_time(t) {
            serde_json::Value::String(s) => s,
            _ => "-".to_string(),
        };
        let mut out = format!(
            "dry run: nothing was written ({format}; tokens {counted})\n{:<10} {:<11} {:>8} {:>8} {:>10} {:>10} {:>8}  {}\n",
            "channel",
            "signal",
            "samples",
            "sessions",
            "tokens",
            "trainable",
            "longest",
            "time range"
        );
        let mut all = Group::default();
        for ((channel, signal), g) in &self.groups {
            let _ = writeln!(
                out,
                "{channel:<10} {:<11} {:>8} {:>8} {:>10} {:>10} {:>8}  {} .. {}",
                if signal.is_empty() { "-" } else { signal },
                g.samples,
                g.sessions.len(),
                g.total,
                g.trainable,
                g.longest,
                time(g.first),
                time(g.last)
            );
            all.samples += g.samples;
            all.sessions.extend(g.sessions.iter().cloned());
            all.total += g.total;
            all.trainable += g.trainable;
            all.longest = all.longest.max(g.longest);
            for t in [g.first, g.last].into_iter().flatten() {
                all.first = Some(all.first.map_or(t, |f| f.min(t)));
                all.last = Some(all.last.map_or(t, |l| l.max(t)));
            }
        }
        let _ = writeln!(
            out,
            "{:<10} {:<11} {:>8} {:>8} {:>10} {:>10} {:>8}  {} .. {}",
            "all",
            "",
            all.samples,
            all.sessions.len(),
            all.total,
            all.trainable,
            all.longest,
            time(all.first),
            time(all.last)
        );
        if skipped.is_empty() {
            out.push_str("skipped: none\n");
        } else {
            out.push_str("skipped:\n");
            for (reason, n) in skipped {
                let _ = writeln!(out, "  {reason:<28} {n:>8}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_add_up() {
        let mut d = DryRun::default();
        let c = |total, trainable| Count {
            total,
            trainable,
            last_turn: 0,
        };
        d.add(("nexus", ""), "a", (Some(0.0), Some(60.0)), c(100, 40));
        d.add(("nexus", ""), "a", (Some(120.0), None), c(300, 10));
        d.add(("tui", ""), "b", (None, None), c(5, 1));
        let text = d.render("sft", "estimated", &BTreeMap::from([("over_budget", 2)]));
        assert!(text.contains("nexus      -                  2        1        400         50      300  1970-01-01T00:00:00Z .. 1970-01-01T00:02:00Z"), "{text}");
        assert!(
            text.contains(
                "all                           3        2        405         51      300"
            ),
            "{text}"
        );
        assert!(text.contains("over_budget"), "{text}");
    }
}
