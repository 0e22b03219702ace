//! Hit rates of the export's text-keyed caches, for benchmarks: with
//! `HERMES_HARVEST_CACHE_STATS=1` in the environment, the process prints
//! one line to stderr at its end (see [`report`]); without it, nothing is
//! counted (one relaxed load per hash).
//!
//! The caches are maps with [`crate::hash::BuildFast`], and each is used the
//! same way: look a key up, and on a miss compute the value and insert it
//! under the same key. So the counts come from the hasher alone, with one
//! line in the caches' own code (the BPE's small table in front of its
//! short-word cache takes no hash; its hits are counted by [`word_hit`]):
//! per thread and per key shape, a hash equal
//! to the one before it is the insert that follows a miss; any other hash is
//! a new lookup (the exact rules are at [`count`]). The shapes tell the
//! caches apart:
//! - byte-slice keys: the BPE word cache (`tokens/bpe.rs`);
//! - `str` keys: the system-prompt cache (`format/sft.rs`) and, with
//!   `--tokenizer`, the rendered-piece cache (`tokens/chat.rs`). The
//!   system-prompt cache does the same lookups with and without a tokenizer,
//!   so the piece cache's figures are the difference of two runs
//!   (`scripts/bench.sh` prints them).
//!
//! Biases: growing a map re-hashes its keys (counted as hits: about twice
//! the largest size the map reaches), and the first insert into an empty
//! map follows no hashed lookup (counted as a hit, once per clearing); both
//! are bounded by the caches' sizes, not by the run. A word looked up twice
//! in a row with no other hash between (a repeated pre-token) counts as a
//! miss, and so does a system prompt looked up by two sessions in a row
//! with nothing fingerprinted between them: those lower the rates, so the
//! rates printed are lower bounds.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// The kind of key a [`crate::hash::FastHasher`] hashes: a `str` (its bytes, then
/// `0xff`), a byte slice (its length, then its bytes), or raw bytes
/// ([`fingerprint`]).
#[derive(Default, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    #[default]
    Raw,
    Str,
    Bytes,
}

/// The environment variable that turns the counting on.
pub const ENV: &str = "HERMES_HARVEST_CACHE_STATS";

const UNKNOWN: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Per shape (0: `str` keys, 1: byte-slice keys): lookups and misses.
static LOOKUPS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
static MISSES: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// One thread's recent hashes.
#[derive(Clone, Copy)]
struct Recent {
    /// The last hash of any shape, and whether it was a byte-slice lookup.
    any: u64,
    any_bytes_lookup: bool,
    /// The last `str` hash, whether it was a lookup, and whether only
    /// byte-slice hashes came since.
    text: u64,
    text_lookup: bool,
    text_clean: bool,
    /// This thread's lookups and misses, per shape.
    tally: [(u64, u64); 2],
}

thread_local! {
    static RECENT: Cell<Recent> = const {
        Cell::new(Recent {
            any: 0,
            any_bytes_lookup: false,
            text: 0,
            text_lookup: false,
            text_clean: false,
            tally: [(0, 0); 2],
        })
    };
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

/// Called by the hasher for every hash it finishes.
#[inline]
pub fn hashed(shape: Shape, h: u64) {
    if on() {
        count(shape, h);
    }
}

/// The rules (see the module header): a byte-slice key's miss is a lookup
/// directly followed by the same hash (the BPE computes the word's tokens
/// in between without hashing); a `str` key's miss is a lookup followed by
/// the same hash with nothing but byte-slice hashes in between (the
/// rendered piece being tokenized; a system prompt being redacted hashes
/// nothing). Any other hash of those shapes is a lookup.
#[cold]
fn count(shape: Shape, h: u64) {
    RECENT.with(|cell| {
        let mut r = cell.get();
        match shape {
            Shape::Raw => r.text_clean = false,
            Shape::Bytes => {
                let insert = r.any_bytes_lookup && r.any == h;
                tally(&mut r, 1, insert);
                r.any_bytes_lookup = !insert;
            }
            Shape::Str => {
                let insert = r.text_lookup && r.text_clean && r.text == h;
                tally(&mut r, 0, insert);
                r.text = h;
                r.text_lookup = !insert;
                r.text_clean = true;
                r.any_bytes_lookup = false;
            }
        }
        if shape != Shape::Bytes {
            r.any_bytes_lookup = false;
        }
        r.any = h;
        cell.set(r);
    });
}

fn tally(r: &mut Recent, slot: usize, insert: bool) {
    if insert {
        r.tally[slot].1 += 1;
        MISSES[slot].fetch_add(1, Ordering::Relaxed);
    } else {
        r.tally[slot].0 += 1;
        LOOKUPS[slot].fetch_add(1, Ordering::Relaxed);
    }
}

/// Sessions formatted ahead on a worker: taken by the sink, formatted again.
static AHEAD: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// A word found in the BPE's small table in front of its short-word cache
/// (no hash is taken for it): one byte-slice lookup that hit.
#[inline]
pub fn word_hit() {
    if on() {
        RECENT.with(|cell| {
            let mut r = cell.get();
            tally(&mut r, 1, false);
            r.any_bytes_lookup = false;
            cell.set(r);
        });
    }
}

/// A session formatted ahead reached the sink: `taken` when its selection
/// was the one formatted for (see `cmd::export`).
pub fn ahead(taken: bool) {
    if on() {
        AHEAD[usize::from(!taken)].fetch_add(1, Ordering::Relaxed);
    }
}

/// Lookups and hits so far: (`str` keys, byte-slice keys).
pub fn figures() -> [(u64, u64); 2] {
    [0, 1].map(|i| {
        let n = LOOKUPS[i].load(Ordering::Relaxed);
        (n, n.saturating_sub(MISSES[i].load(Ordering::Relaxed)))
    })
}

/// The line printed at the end of a run when counting is on, else `None`.
pub fn report() -> Option<String> {
    if STATE.load(Ordering::Relaxed) != ON && !on() {
        return None;
    }
    let [text, words] = figures();
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
        "cache stats: text keys (system prompts, rendered pieces): {}; words (BPE): {}; sessions formatted ahead: {taken} taken, {again} formatted again",
        rate(text),
        rate(words)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::BuildFast;
    use std::collections::HashMap;

    #[test]
    fn lookups_then_inserts_count_as_misses_and_lone_lookups_as_hits() {
        // Counting is process-wide: force it on, and read this thread's own
        // tally (the other tests hash too, on their threads).
        STATE.store(ON, Ordering::Relaxed);
        let mine = || RECENT.with(|c| c.get().tally.map(|(n, m)| (n, n - m)));
        let (d_text, d_words) = std::thread::spawn(move || {
            let mut words: HashMap<Box<[u8]>, u32, BuildFast> = HashMap::default();
            words.reserve(64); // no growth: no re-hashing below
            let mut text: HashMap<String, u32, BuildFast> = HashMap::default();
            text.reserve(64);
            text.insert("seed".into(), 0);
            words.insert(b"seed"[..].into(), 0);
            let start = mine();
            for w in ["the", "cat", "the", "sat", "the", "cat", "cat"] {
                if !words.contains_key(w.as_bytes()) {
                    words.insert(w.as_bytes().into(), 1);
                }
                // A str key's miss may tokenize in between (byte-slice hashes).
                if !text.contains_key(w) {
                    let _ = words.contains_key(&b"seed"[..]);
                    text.insert(w.to_string(), 1);
                }
                // Between two lookups of a system prompt, lines are fingerprinted.
                let _ = crate::hash::fingerprint(w.as_bytes());
            }
            let end = mine();
            (
                (end[0].0 - start[0].0, end[0].1 - start[0].1),
                (end[1].0 - start[1].0, end[1].1 - start[1].1),
            )
        })
        .join()
        .unwrap();
        // Seven lookups each, three misses (the, cat, sat), four hits; the
        // words also had three "seed" lookups, all hits.
        assert_eq!(d_text, (7, 4));
        assert_eq!(d_words, (7 + 3, 4 + 3));
        assert!(report().is_some());
    }
}
