//! Hit rates of the export's caches, for benchmarks: with
//! `HERMES_HARVEST_CACHE_STATS=1` in the environment, the process prints
//! one line to stderr at its end (see [`report`]); without it, nothing is
//! counted (one relaxed load per lookup).
//!
//! Each cache counts its own lookups where it looks a key up ([`lookup`]):
//! - [`Cache::SystemPrompts`]: system messages made once per distinct
//!   prompt (`format/sft.rs`);
//! - [`Cache::Pieces`]: token counts of rendered pieces, with `--tokenizer`
//!   (`tokens/chat.rs`);
//! - [`Cache::Words`]: BPE words, in the small table in front of the
//!   short-word cache, the short-word cache or the long-word cache
//!   (`tokens/bpe.rs`); a word found in none of them is one miss.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// The caches counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cache {
    SystemPrompts = 0,
    Pieces = 1,
    Words = 2,
}

/// The environment variable that turns the counting on.
pub const ENV: &str = "HERMES_HARVEST_CACHE_STATS";

const UNKNOWN: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Per cache: lookups and hits.
static LOOKUPS: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];
static HITS: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];

#[cfg(test)]
thread_local! {
    /// This thread's lookups and hits per cache, for the unit test (it shares
    /// the process with other tests that look things up too).
    static MINE: std::cell::Cell<[(u64, u64); 3]> = const { std::cell::Cell::new([(0, 0); 3]) };
}

fn on() -> bool {
    match STATE.load(Ordering::Relaxed) {
        ON => true,
        OFF => false,
        _ => {
            let on = std::env::var_os(ENV).is_some_and(|v| !v.is_empty() && v != "0");
            STATE.store(if on { ON } else { OFF }, Ordering::Relaxed);
            on
        }
    }
}

/// One lookup in `cache`, a hit or not.
#[inline]
pub fn lookup(cache: Cache, hit: bool) {
    if on() {
        count(cache, hit);
    }
}

#[cold]
fn count(cache: Cache, hit: bool) {
    let c = cache as usize;
    LOOKUPS[c].fetch_add(1, Ordering::Relaxed);
    HITS[c].fetch_add(u64::from(hit), Ordering::Relaxed);
    #[cfg(test)]
    MINE.with(|m| {
        let mut t = m.get();
        t[c].0 += 1;
        t[c].1 += u64::from(hit);
        m.set(t);
    });
}

/// Sessions formatted ahead on a worker: taken by the sink, formatted again.
static AHEAD: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// A session formatted ahead reached the sink: `taken` when its selection
/// was the one formatted for (see `cmd::export`).
pub fn ahead(taken: bool) {
    if on() {
        AHEAD[usize::from(!taken)].fetch_add(1, Ordering::Relaxed);
    }
}

/// Lookups and hits so far, per cache (in [`Cache`] order).
pub fn figures() -> [(u64, u64); 3] {
    [0, 1, 2].map(|i| {
        (
            LOOKUPS[i].load(Ordering::Relaxed),
            HITS[i].load(Ordering::Relaxed),
        )
    })
}

/// The line printed at the end of a run when counting is on, else `None`.
pub fn report() -> Option<String> {
    if STATE.load(Ordering::Relaxed) != ON && !on() {
        return None;
    }
    let [prompts, pieces, words] = figures();
    let rate = |(n, hits): (u64, u64)| {
        let pct = if n == 0 {
            0.0
        } else {
            100.0 * hits as f64 / n as f64
        };
        format!("{n} lookups, {hits} hits ({pct:.1}%)")
    };
    let [taken, again] = AHEAD.each_ref().map(|a| a.load(Ordering::Relaxed));
    Some(format!(
        "cache stats: system prompts: {}; rendered pieces: {}; words (BPE): {}; sessions formatted ahead: {taken} taken, {again} formatted again",
        rate(prompts),
        rate(pieces),
        rate(words)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cache_counts_its_own_lookups_and_hits() {
        STATE.store(ON, Ordering::Relaxed);
        let (mine, all) = std::thread::spawn(|| {
            let before = figures();
            for hit in [false, true, true] {
                lookup(Cache::SystemPrompts, hit);
            }
            lookup(Cache::Words, true);
            lookup(Cache::Words, false);
            (MINE.with(std::cell::Cell::get), (before, figures()))
        })
        .join()
        .unwrap();
        assert_eq!(mine, [(3, 2), (0, 0), (2, 1)]);
        // The process-wide figures grew by at least this thread's.
        let (before, after) = all;
        for (c, (n, h)) in mine.iter().enumerate() {
            assert!(after[c].0 - before[c].0 >= *n && after[c].1 - before[c].1 >= *h);
        }
        let line = report().expect("counting is on");
        assert!(line.starts_with("cache stats: system prompts: "), "{line}");
    }
}
