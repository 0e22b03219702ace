//! `--varied`: text that varies from instance to instance as real conversations do.
//!
//! - A lexicon of about 40,000 words: every word of the captured store (system prompts,
//!   messages, tool results) and pseudo-words built from syllables, drawn with a Zipf
//!   law (the captured words most often, the long tail rare), as words are in real text.
//! - Words of each text are replaced (about half of them, by the same rules as the
//!   default mode) by lexicon words chosen per (instance, word).
//! - Each text gets generated prose inserted at a sentence boundary at a varying offset:
//!   a walk over the word pairs of the captured texts, jumping to a Zipf-drawn word now
//!   and then, with numbers, sentence ends and paragraphs; 0 to about 1,600 characters
//!   (log-uniform, none for about one text in seven), shorter for reasoning.
//! - Tool-call arguments and JSON tool results keep their keys, ids and statuses; their
//!   string values are varied and extended the same way, so every call's arguments and
//!   results differ from one instance to the next.
//!
//! Everything depends on (seed, instance, text) only: equal texts of one instance (a
//! regenerated answer, a compaction copy, a tool call and its echo in the result) stay
//! equal, and a store is the same for the same seed.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::Value as Json;

use super::{KEEP, Rng, fnv1a, mix64};

/// JSON keys whose values are structure, never varied.
const FIXED_KEYS: &[&str] = &[
    "id",
    "call_id",
    "tool_call_id",
    "status",
    "type",
    "name",
    "role",
    "error",
];

const ONSETS: &[&str] = &[
    "b", "br", "c", "ch", "cl", "d", "dr", "f", "fl", "g", "gr", "h", "j", "k", "l", "m", "n", "p",
    "pl", "pr", "qu", "r", "s", "sh", "sk", "st", "t", "th", "tr", "v", "w", "z",
];
const NUCLEI: &[&str] = &["a", "e", "i", "o", "u", "ai", "ea", "ou", "y"];
const CODAS: &[&str] = &["", "", "n", "r", "l", "s", "t", "m", "nd", "st", "rk", "x"];
const PSEUDO_WORDS: usize = 36_000;

pub struct Lexicon {
    words: Vec<String>,
    /// Cumulative Zipf weights over `words`.
    cumulative: Vec<f64>,
    /// For a captured word: the indexes of the words that followed it in the capture.
    next: Vec<Vec<u32>>,
}

fn pseudo_word(n: usize) -> String {
    let mut h = mix64(n as u64 ^ 0x7053_6575_646F);
    let mut pick = |len: usize| {
        let i = (h % len as u64) as usize;
        h /= len as u64;
        i
    };
    let mut w = String::new();
    for _ in 0..1 + pick(3) {
        w.push_str(ONSETS[pick(ONSETS.len())]);
        w.push_str(NUCLEI[pick(NUCLEI.len())]);
        w.push_str(CODAS[pick(CODAS.len())]);
    }
    w
}

/// A captured token as a lexicon word: letters (and inner `'` or `-`) only.
fn clean_word(tok: &str) -> Option<&str> {
    let w = tok.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let ok = !w.is_empty()
        && w.len() <= 24
        && w.bytes().any(|c| c.is_ascii_lowercase())
        && w.bytes()
            .all(|c| c.is_ascii_alphabetic() || c == b'\'' || c == b'-');
    ok.then_some(w)
}

impl Lexicon {
    /// Built from the captured texts, in their order (deterministic).
    pub fn new<'a>(texts: impl Iterator<Item = &'a str>) -> Lexicon {
        let mut index: HashMap<String, u32> = HashMap::new();
        let mut words: Vec<String> = Vec::new();
        let mut counts: Vec<u64> = Vec::new();
        let mut next: Vec<Vec<u32>> = Vec::new();
        for text in texts {
            let mut prev: Option<u32> = None;
            for tok in text.split_whitespace() {
                let Some(w) = clean_word(tok) else {
                    prev = None;
                    continue;
                };
                let w = w.to_ascii_lowercase();
                let id = *index.entry(w.clone()).or_insert_with(|| {
                    words.push(w);
                    counts.push(0);
                    next.push(Vec::new());
                    (words.len() - 1) as u32
                });
                counts[id as usize] += 1;
                if let Some(p) = prev {
                    next[p as usize].push(id);
                }
                prev = (!tok.ends_with(['.', '!', '?', ':'])).then_some(id);
            }
        }
        // Ranks: captured words by frequency (ties in order of appearance), then the
        // pseudo-words.
        let mut order: Vec<usize> = (0..words.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(counts[i]));
        let mut rank = vec![0usize; words.len()];
        for (r, &i) in order.iter().enumerate() {
            rank[i] = r;
        }
        let captured = words.len();
        let mut seen: HashSet<String> = words.iter().cloned().collect();
        let mut n = 0;
        while words.len() < captured + PSEUDO_WORDS {
            let w = pseudo_word(n);
            n += 1;
            if seen.insert(w.clone()) {
                words.push(w);
            }
        }
        let mut acc = 0.0;
        let cumulative = (0..words.len())
            .map(|i| {
                let r = if i < captured { rank[i] } else { i };
                acc += 1.0 / (r as f64 + 2.0);
                acc
            })
            .collect();
        Lexicon {
            words,
            cumulative,
            next,
        }
    }

    pub fn size(&self) -> usize {
        self.words.len()
    }

    /// The word a uniform `u` in [0, 1) picks under the Zipf law.
    fn zipf(&self, u: f64) -> usize {
        let x = u * self.cumulative.last().copied().unwrap_or(0.0);
        self.cumulative
            .partition_point(|&c| c <= x)
            .min(self.words.len() - 1)
    }

    fn zipf_h(&self, h: u64) -> usize {
        self.zipf((h >> 11) as f64 / (1u64 << 53) as f64)
    }

    /// Prose of about `len` bytes (see the module header).
    fn babble(&self, rng: &mut Rng, len: usize, out: &mut String) {
        let end = out.len() + len;
        let mut cur = self.zipf(rng.unit());
        let mut capital = true;
        while out.len() < end {
            let r = rng.below(1000);
            if r < 25 {
                match rng.below(4) {
                    0 => out.push_str(&rng.below(100).to_string()),
                    1 => out.push_str(&format!("{}.{}", rng.below(1000), rng.below(100))),
                    2 => out.push_str(&format!(
                        "2026-{:02}-{:02}",
                        1 + rng.below(12),
                        1 + rng.below(28)
                    )),
                    _ => out.push_str(&format!("{}%", rng.below(101))),
                }
            } else {
                let w = &self.words[cur];
                if capital {
                    out.push(w.as_bytes()[0].to_ascii_uppercase() as char);
                    out.push_str(&w[1..]);
                } else {
                    out.push_str(w);
                }
            }
            capital = false;
            let r = rng.below(1000);
            if r < 70 {
                out.push_str([".", ".", ".", "?", "!", ";"][rng.below(6) as usize]);
                capital = true;
                out.push_str(if rng.below(10) == 0 { "\n\n" } else { " " });
            } else if r < 110 {
                out.push_str(", ");
            } else {
                out.push(' ');
            }
            let follow = self.next.get(cur).filter(|n| !n.is_empty());
            cur = match follow {
                Some(n) if rng.below(100) < 72 => n[rng.below(n.len() as u64) as usize] as usize,
                _ => self.zipf(rng.unit()),
            };
        }
        let trimmed = out.trim_end_matches([' ', ',', '\n']).len();
        out.truncate(trimmed);
        if !out.ends_with(['.', '?', '!', ';']) {
            out.push('.');
        }
    }

    /// Replaces about half the eligible words of `text` (the default mode's rules) by
    /// lexicon words chosen per (seed, word).
    fn substitute(&self, text: &str, seed: u64, out: &mut String) {
        let b = text.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let start = i;
            if !b[i].is_ascii_alphabetic() {
                while i < b.len() && !b[i].is_ascii_alphabetic() {
                    i += 1;
                }
                out.push_str(&text[start..i]);
                continue;
            }
            while i < b.len() && b[i].is_ascii_alphabetic() {
                i += 1;
            }
            let word = &text[start..i];
            let before = if start > 0 { b[start - 1] } else { b' ' };
            let after = b.get(i).copied().unwrap_or(b' ');
            let eligible = word.len() >= 4
                && !matches!(before, b'[' | b'_' | b'\'' | b'/' | b'.')
                && !matches!(after, b'_' | b'/' | b'(')
                && !word.bytes().all(|c| c.is_ascii_uppercase())
                && !KEEP.contains(&word);
            let h = mix64(fnv1a(word) ^ seed);
            if eligible && h % 100 < 50 {
                let new = &self.words[self.zipf_h(mix64(h))];
                if b[start].is_ascii_uppercase() {
                    out.push(new.as_bytes()[0].to_ascii_uppercase() as char);
                    out.push_str(&new[1..]);
                } else {
                    out.push_str(new);
                }
            } else {
                out.push_str(word);
            }
        }
    }

    /// `text` varied for instance `seed`: words substituted, prose of up to about
    /// `max_extra` bytes inserted at a sentence boundary at a varying offset.
    pub fn vary(&self, text: &str, seed: u64, max_extra: usize) -> String {
        if text.is_empty() {
            return String::new();
        }
        let th = mix64(seed ^ fnv1a(text).rotate_left(13));
        let mut rng = super::Rng::new(th);
        let mut base = String::with_capacity(text.len() + max_extra / 2);
        self.substitute(text, seed, &mut base);
        let extra = if max_extra < 20 || rng.below(7) == 0 {
            0
        } else {
            // log-uniform in [20, max_extra]
            (20.0 * (max_extra as f64 / 20.0).powf(rng.unit())) as usize
        };
        if extra == 0 {
            return base;
        }
        let from = rng.below(base.len() as u64 + 1) as usize;
        let at = sentence_end_after(&base, from);
        let mut out = String::with_capacity(base.len() + extra + 8);
        out.push_str(&base[..at]);
        if at == base.len() && !base.ends_with(char::is_whitespace) {
            out.push(if rng.below(3) == 0 { '\n' } else { ' ' });
        }
        self.babble(&mut rng, extra, &mut out);
        if at < base.len() {
            out.push(' ');
        }
        out.push_str(&base[at..]);
        out
    }

    /// A JSON text with its string values varied (keys, numbers, booleans and the values
    /// of [`FIXED_KEYS`] kept); `None` if it is not JSON.
    pub fn vary_json(&self, text: &str, seed: u64, max_extra: usize) -> Option<String> {
        let t = text.trim_start();
        if !(t.starts_with('{') || t.starts_with('[')) {
            return None;
        }
        let mut v: Json = serde_json::from_str(text).ok()?;
        self.walk(&mut v, seed, max_extra);
        Some(python_json(&v))
    }

    fn walk(&self, v: &mut Json, seed: u64, max_extra: usize) {
        match v {
            Json::String(s) if s.contains(' ') || s.len() > 12 => {
                *s = self.vary(s, seed, max_extra);
            }
            Json::Array(a) => a.iter_mut().for_each(|x| self.walk(x, seed, max_extra)),
            Json::Object(o) => {
                for (k, x) in o.iter_mut() {
                    if !FIXED_KEYS.contains(&k.as_str()) {
                        self.walk(x, seed, max_extra);
                    }
                }
            }
            _ => {}
        }
    }

    /// A `tool_calls` JSON text with each call's `arguments` varied.
    pub fn vary_tool_calls(&self, text: &str, seed: u64) -> Option<String> {
        let mut v: Json = serde_json::from_str(text).ok()?;
        for call in v.as_array_mut()? {
            let Some(args) = call
                .get_mut("function")
                .and_then(|f| f.get_mut("arguments"))
            else {
                continue;
            };
            if let Some(new) = args.as_str().and_then(|a| self.vary_json(a, seed, 400)) {
                *args = Json::String(new);
            }
        }
        Some(python_json(&v))
    }
}

/// JSON as Python's `json.dumps` writes it (as Hermes stores it): `", "` and `": "`.
fn python_json(v: &Json) -> String {
    struct Py;
    impl serde_json::ser::Formatter for Py {
        fn begin_array_value<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            if first { Ok(()) } else { w.write_all(b", ") }
        }
        fn begin_object_key<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            if first { Ok(()) } else { w.write_all(b", ") }
        }
        fn begin_object_value<W: ?Sized + std::io::Write>(
            &mut self,
            w: &mut W,
        ) -> std::io::Result<()> {
            w.write_all(b": ")
        }
    }
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, Py);
    serde::Serialize::serialize(v, &mut ser).expect("JSON values serialize");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// The end of the first sentence (or line) at or after `from`, or the text's end.
fn sentence_end_after(s: &str, from: usize) -> usize {
    let b = s.as_bytes();
    let mut i = from;
    while i < b.len() {
        if b[i] == b'\n' || (matches!(b[i], b'.' | b'!' | b'?') && b.get(i + 1) == Some(&b' ')) {
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

// ---------------------------------------------------------------------------------------
// How varied a store is.

/// Distinct texts per kind of message and distinct 8-word shingles of the message
/// contents (estimated from the k smallest shingle hashes: within about 2 %).
#[derive(Default)]
pub struct Variety {
    texts: [(u64, HashSet<u64>); 3],
    shingles: u64,
    smallest: BTreeSet<u64>,
    words: u64,
    messages: u64,
}

const KMV: usize = 8192;
const SHINGLE: usize = 8;

impl Variety {
    /// One message: its role, content and tool calls.
    pub fn add(&mut self, role: &str, content: Option<&str>, tool_calls: Option<&str>) {
        let text = content.unwrap_or("");
        let kind = if role == "tool" { 1 } else { 0 };
        if !text.is_empty() {
            self.texts[kind].0 += 1;
            self.texts[kind].1.insert(mix64(fnv1a(text)));
        }
        if let Some(c) = tool_calls {
            self.texts[2].0 += 1;
            self.texts[2].1.insert(mix64(fnv1a(c)));
        }
        let hashes: Vec<u64> = text.split_whitespace().map(fnv1a).collect();
        self.words += hashes.len() as u64;
        self.messages += 1;
        for w in hashes.windows(SHINGLE) {
            let mut h = 0u64;
            for &x in w {
                h = (h.rotate_left(9) ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            }
            let h = mix64(h);
            self.shingles += 1;
            let full = self.smallest.len() >= KMV;
            if (!full || h < *self.smallest.last().unwrap_or(&u64::MAX))
                && self.smallest.insert(h)
                && self.smallest.len() > KMV
            {
                self.smallest.pop_last();
            }
        }
    }

    pub fn report(&self) -> String {
        let distinct_shingles = if self.smallest.len() < KMV {
            self.smallest.len() as f64
        } else {
            let kth = *self.smallest.last().unwrap_or(&u64::MAX) as f64;
            (KMV as f64 - 1.0) * (u64::MAX as f64 / kth)
        };
        let ratio = |(n, set): &(u64, HashSet<u64>)| {
            format!(
                "{} distinct / {n} ({:.3})",
                set.len(),
                set.len() as f64 / (*n).max(1) as f64
            )
        };
        format!(
            "variety: non-empty message texts (user, assistant): {}; tool results: {}; \
             tool-call texts: {}; 8-word shingles of contents: ~{:.0} distinct / {} ({:.3}); \
             {:.1} words per message",
            ratio(&self.texts[0]),
            ratio(&self.texts[1]),
            ratio(&self.texts[2]),
            distinct_shingles,
            self.shingles,
            distinct_shingles / self.shingles.max(1) as f64,
            self.words as f64 / self.messages.max(1) as f64
        )
    }
}
