//! The running sums of a cumulative output, over every night: what the
//! state keeps so that the manifest and the card can describe the whole
//! dataset without reading it, and so that `forget` and retraction can
//! subtract what they remove (each line's [`LineFigures`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::Channel;
use crate::rebuild::Signal;
use crate::tokens::Count;

/// Running sums over every night of a cumulative output (the state keeps
/// them; a one-shot export is its own single night).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Dataset {
    /// Lines per file as committed.
    #[serde(default)]
    pub lines: BTreeMap<String, u64>,
    /// Units per split (directory output).
    #[serde(default)]
    pub units: BTreeMap<String, u64>,
    /// Lines per channel and per DPO signal.
    #[serde(default)]
    pub samples: BTreeMap<String, u64>,
    #[serde(default)]
    pub signals: BTreeMap<String, u64>,
    /// Times of the first and last turn the lines train on (epoch seconds).
    #[serde(default)]
    pub first: Option<f64>,
    #[serde(default)]
    pub last: Option<f64>,
    /// Skips and redactions summed over the nights.
    #[serde(default)]
    pub skipped: BTreeMap<String, u64>,
    #[serde(default)]
    pub redactions: BTreeMap<String, u64>,
    /// Tokens per channel of the lines the files hold.
    #[serde(default)]
    pub tokens: BTreeMap<String, DatasetTokens>,
    /// Lines `forget` removed.
    #[serde(default)]
    pub forgotten_lines: u64,
    /// Lines retracted because their answer was regenerated or undone.
    #[serde(default)]
    pub retracted_lines: u64,
    /// Runs that added lines.
    #[serde(default)]
    pub nights: u64,
}

/// The token figures of the lines of one channel: running sums, adjusted
/// by `forget` and retraction through each line's [`LineFigures`].
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DatasetTokens {
    pub samples: u64,
    pub total: u64,
    pub trainable: u64,
}

/// What one committed line adds to the running sums, kept in the state in
/// file order (see `RunState::figures`) so that a removed line is
/// subtracted: its channel (index in [`Channel::ALL`]), its signal (0 for
/// none, else 1 + index in [`Signal::ALL`]), its total and trainable
/// tokens (a line never holds 4 billion). A tuple, so that the state stays
/// small.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LineFigures(pub u8, pub u8, pub u32, pub u32);

impl LineFigures {
    pub fn new(channel: Channel, signal: Option<Signal>, count: Count) -> LineFigures {
        let code = |i: Option<usize>| i.map_or(0, |i| i as u8);
        LineFigures(
            code(Channel::ALL.iter().position(|c| *c == channel)),
            code(signal.and_then(|s| Signal::ALL.iter().position(|x| *x == s).map(|i| i + 1))),
            u32::try_from(count.total).unwrap_or(u32::MAX),
            u32::try_from(count.trainable).unwrap_or(u32::MAX),
        )
    }

    fn channel(&self) -> &'static str {
        Channel::ALL
            .get(usize::from(self.0))
            .map_or("other", |c| c.as_str())
    }

    fn signal(&self) -> Option<&'static str> {
        let i = usize::from(self.1).checked_sub(1)?;
        Signal::ALL.get(i).map(|s| s.as_str())
    }
}

/// `map[key] -= n`, dropping the entry at 0 (an absent key is no line).
fn take(map: &mut BTreeMap<String, u64>, key: &str, n: u64) {
    if let Some(v) = map.get_mut(key) {
        *v = v.saturating_sub(n);
        if *v == 0 {
            map.remove(key);
        }
    }
}

impl Dataset {
    pub fn saw(&mut self, t: Option<f64>) {
        if let Some(t) = t {
            self.first = Some(self.first.map_or(t, |f| f.min(t)));
            self.last = Some(self.last.map_or(t, |l| l.max(t)));
        }
    }

    /// Adds a line to the sums (its channel, signal and tokens).
    pub fn add(&mut self, f: &LineFigures) {
        let channel = f.channel();
        *self.samples.entry(channel.to_string()).or_default() += 1;
        if let Some(s) = f.signal() {
            *self.signals.entry(s.to_string()).or_default() += 1;
        }
        let t = self.tokens.entry(channel.to_string()).or_default();
        t.samples += 1;
        t.total += u64::from(f.2);
        t.trainable += u64::from(f.3);
    }

    /// Takes a removed line of `channel` (and `signal`) out of the lines
    /// per channel and signal.
    pub fn remove_line(&mut self, channel: &str, signal: Option<&str>) {
        take(&mut self.samples, channel, 1);
        if let Some(s) = signal {
            take(&mut self.signals, s, 1);
        }
    }

    /// Takes a removed line out of the sums.
    pub fn remove(&mut self, f: &LineFigures) {
        let channel = f.channel();
        self.remove_line(channel, f.signal());
        if let Some(t) = self.tokens.get_mut(channel) {
            t.samples = t.samples.saturating_sub(1);
            t.total = t.total.saturating_sub(u64::from(f.2));
            t.trainable = t.trainable.saturating_sub(u64::from(f.3));
            if t.samples == 0 {
                self.tokens.remove(channel);
            }
        }
    }

    /// Recounts the lines' figures from their `meta`: the time range, and
    /// with `counts` the lines per channel and signal (when the state has
    /// no [`LineFigures`] to subtract); false when a line has no `meta`
    /// (the sums stay).
    pub fn recount<'v>(
        &mut self,
        metas: impl IntoIterator<Item = &'v serde_json::Value>,
        counts: bool,
    ) -> bool {
        let mut fresh = Dataset::default();
        for m in metas {
            let Some(channel) = m["channel"].as_str() else {
                return false;
            };
            *fresh.samples.entry(channel.to_string()).or_default() += 1;
            if let Some(sig) = m["signal"].as_str() {
                *fresh.signals.entry(sig.to_string()).or_default() += 1;
            }
            for k in ["first", "last"] {
                let t = m[k]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.timestamp_micros() as f64 / 1e6);
                fresh.saw(t);
            }
        }
        if counts {
            self.samples = fresh.samples;
            self.signals = fresh.signals;
        }
        self.first = fresh.first;
        self.last = fresh.last;
        true
    }
}
