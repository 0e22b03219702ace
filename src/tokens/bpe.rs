//! A fast, exact token counter for byte-level BPE tokenizers (the family of
//! GPT-2, Llama 3, Qwen, Mistral Tekken and most chat models), used in place
//! of the `tokenizers` crate's full encoding, which builds per-byte
//! alignments and a string per token and runs at a few MB/s.
//!
//! It implements what that crate does for this family and nothing else:
//! split the text with the pre-tokenizer's regex (the same `fancy-regex`
//! engine and pattern), map each byte to its byte-level symbol, and apply
//! the BPE merges lowest rank first, leftmost first (the order of the
//! crate's merge queue). Word results are remembered. Any other
//! configuration (a normalizer, another pre-tokenizer or model, dropout,
//! byte fallback, added tokens that are not special) is not handled:
//! [`FastBpe::from_json`] returns `None` and the crate counts.

use std::collections::HashMap;
use std::sync::Arc;

use regex_automata::{Anchored, Input, meta};

use crate::hash::BuildFast;
use crate::stats_env::Cache;

use serde_json::Value as Json;

/// The pattern of the `ByteLevel` pre-tokenizer with `use_regex`.
const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Words longer than this are left to the crate (the merge loop here is
/// quadratic in the word's length).
pub const MAX_WORD_BYTES: usize = 256;
/// Words remembered at most by the short-word cache and by the cache of
/// the others (then that cache starts over). A long word's entry takes
/// about six times a short one's, and on varied text the long-word cache
/// at 16,384 costs no measurable time against 65,536 (see
/// docs/performance.md).
const CACHE_SHORT_WORDS: usize = 1 << 15;
const CACHE_LONG_WORDS: usize = 1 << 14;
/// Words of at most this many bytes are short: kept inline, their bytes as
/// the key and their token lengths packed in one word (a word of 15 bytes
/// has at most 15 tokens of at most 15 bytes each, four bits apiece).
const SHORT_BYTES: usize = 15;
/// A reused buffer of word bounds larger than this (in bounds) is let go
/// after the text it was grown for.
const KEEP_BOUNDS: usize = 1 << 16;

/// The pre-tokenizer's split. Patterns ending in `\s+(?!\S)|\s+` (GPT-2,
/// Llama 3, Qwen) run on the `regex-automata` engines, with the look-ahead
/// done by hand: the last alternative becomes `\s+`, and a whitespace run it
/// matched that is followed by a non-space gives its last character back
/// (what `\s+(?!\S)` does by backtracking). Other patterns run on
/// `fancy-regex`, as in the `tokenizers` crate.
#[derive(Clone)]
enum Splitter {
    Fast {
        /// The pattern with `\s+` for its two last alternatives.
        all: meta::Regex,
        /// The pattern without them: a match of `all` came from `\s+`
        /// exactly when this one does not match at the same start.
        head: meta::Regex,
        /// The pattern is GPT-2's: ASCII text is split by [`gpt2_ascii`].
        gpt2: bool,
    },
    Fancy(fancy_regex::Regex),
}

const LOOKAHEAD_TAIL: &str = r"|\s+(?!\S)|\s+";

impl Splitter {
    fn new(pattern: &str) -> Option<Splitter> {
        if let Some(head) = pattern.strip_suffix(LOOKAHEAD_TAIL)
            && let Ok(all) = meta::Regex::new(&format!("{head}|\\s+"))
            && let Ok(head) = meta::Regex::new(head)
        {
            let gpt2 = pattern == GPT2_PATTERN;
            return Some(Splitter::Fast { all, head, gpt2 });
        }
        fancy_regex::Regex::new(pattern).ok().map(Splitter::Fancy)
    }

    /// Start and end of every match, in order.
    fn bounds(&self, text: &str, out: &mut Vec<(usize, usize)>) -> Option<()> {
        match self {
            Splitter::Fancy(re) => {
                for m in re.find_iter(text) {
                    let m = m.ok()?;
                    out.push((m.start(), m.end()));
                }
            }
            Splitter::Fast { all, head, gpt2 } => {
                let mut at = 0;
                while at < text.len() {
                    if let Some(end) = gpt2.then(|| gpt2_ascii(text.as_bytes(), at)).flatten() {
                        out.push((at, end));
                        at = end;
                        continue;
                    }
                    // Nearly every match starts where the last one ended: an
                    // anchored search (forward only) finds it; otherwise the
                    // next match further on.
                    let input = Input::new(text).range(at..);
                    let Some(m) = all
                        .search(&input.clone().anchored(Anchored::Yes))
                        .or_else(|| all.search(&input))
                    else {
                        break;
                    };
                    let (start, mut end) = (m.start(), m.end());
                    // Only a whitespace match can come from `\s+`.
                    if text[start..end].chars().all(char::is_whitespace)
                        && text[end..]
                            .chars()
                            .next()
                            .is_some_and(|c| !c.is_whitespace())
                        && head
                            .search(&Input::new(text).range(start..).anchored(Anchored::Yes))
                            .is_none()
                    {
                        // `\s+(?!\S)`: all but the last whitespace character.
                        let last = text[start..end]
                            .chars()
                            .next_back()
                            .map_or(0, char::len_utf8);
                        if end - last > start {
                            end -= last;
                        }
                    }
                    if end == start {
                        // An empty match: step over one character.
                        at = start + text[start..].chars().next().map_or(1, char::len_utf8);
                        continue;
                    }
                    out.push((start, end));
                    at = end;
                }
            }
        }
        Some(())
    }
}

/// The end of the match of [`GPT2_PATTERN`] at `at` (which always matches
/// where the last match ended), found byte by byte when it depends on
/// ASCII characters only; `None` when a non-ASCII character takes part
/// (whether it is a letter, a number or a space), which the regex decides.
/// The alternatives, first to last: the contractions `'s 't 're 've 'm 'll
/// 'd`; an optional space and a run of letters, of numbers, or of other
/// characters (neither space, letter nor number); then a run of spaces,
/// less its last one when a non-space follows and the run is longer than
/// one (`\s+(?!\S)`, else `\s+`).
fn gpt2_ascii(b: &[u8], at: usize) -> Option<usize> {
    #[derive(PartialEq, Clone, Copy)]
    enum Class {
        Letter,
        Number,
        Space,
        Other,
    }
    let class = |c: u8| -> Option<Class> {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => Some(Class::Letter),
            b'0'..=b'9' => Some(Class::Number),
            b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b' ' => Some(Class::Space),
            0x80.. => None,
            _ => Some(Class::Other),
        }
    };
    // The end of the run of `k` from `i`; `None` if a non-ASCII character
    // could continue it.
    let run = |mut i: usize, k: Class| -> Option<usize> {
        while i < b.len() {
            match class(b[i])? {
                c if c == k => i += 1,
                _ => return Some(i),
            }
        }
        Some(i)
    };
    let first = class(b[at])?;
    if b[at] == b'\'' {
        let rest = &b[at + 1..];
        if matches!(rest.first(), Some(b's' | b't' | b'm' | b'd')) {
            return Some(at + 2);
        }
        if rest.starts_with(b"re") || rest.starts_with(b"ve") || rest.starts_with(b"ll") {
            return Some(at + 3);
        }
    }
    if first != Class::Space {
        return run(at, first);
    }
    if b[at] == b' '
        && let Some(&next) = b.get(at + 1)
    {
        match class(next)? {
            Class::Space => {}
            k => return run(at + 1, k),
        }
    }
    let end = run(at, Class::Space)?;
    if end < b.len() && end - at > 1 {
        // A non-space follows (an ASCII one: `run` stopped at it).
        return Some(end - 1);
    }
    Some(end)
}

/// A copy for another thread (`Clone`) shares the tables read from the
/// vocabulary, which for a real model hold hundreds of thousands of
/// entries, and has caches of its own.
#[derive(Clone)]
pub struct FastBpe {
    split: Splitter,
    /// The symbol id of each byte.
    byte_ids: [u32; 256],
    /// (left, right) → (rank, merged id), the pair keyed as one word
    /// ([`pair`]) under foldhash: it is looked up for the adjacent pairs of
    /// every word the caches miss, and SipHash there took about 4 % of a
    /// `--tokenizer` export's time.
    merges: Arc<foldhash::HashMap<u64, (u32, u32)>>,
    /// With `ignore_merges`, a word that is itself a token is one token.
    whole_words: Option<Arc<HashMap<Vec<u8>, u32>>>,
    /// Byte length of each token id (for offsets).
    token_len: Arc<[u32]>,
    /// No two vocabulary entries share an id: a token's bytes then name
    /// its id, and equal token bytes are equal ids.
    pub distinct_ids: bool,
    /// Each long word's tokens, as byte lengths.
    cache: HashMap<Box<[u8]>, Box<[u32]>, BuildFast>,
    /// The same for short words (most of them), keyed by [`short_key`] and
    /// with the lengths packed ([`pack`]): no pointer to follow and no
    /// bytes to compare out of line.
    short: HashMap<u128, u64, BuildFast>,
    /// The most recent short words in a direct-mapped table in front of
    /// `short`: (key's low word, key's high word, packed lengths), all `0`
    /// for empty (a key's high word holds its length, never 0). Small
    /// enough to stay in the processor's nearest caches, where a lookup in
    /// `short` (control bytes, then the entry) mostly waits for memory.
    front: Box<[[u64; 3]]>,
    /// The word bounds of the text being counted (kept between texts).
    bounds: Vec<(usize, usize)>,
}

/// Slots of [`FastBpe::front`], as a power of two.
const FRONT_BITS: u32 = 11;

/// The slot of `key` in [`FastBpe::front`].
fn front_slot(key: u128) -> usize {
    let (lo, hi) = (key as u64, (key >> 64) as u64);
    let mixed = (lo ^ hi.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> (64 - FRONT_BITS)) as usize
}

/// A short word's token lengths packed in one word: the count in the low
/// four bits, then each length in four bits, first token lowest.
fn pack(lens: &[u32]) -> u64 {
    debug_assert!(lens.len() <= SHORT_BYTES && lens.iter().all(|l| (1..16).contains(l)));
    let lengths = lens.iter().rev().fold(0, |p, &l| (p << 4) | u64::from(l));
    (lengths << 4) | lens.len() as u64
}

/// A slot of [`FastBpe::front`] holding `key` and its packed lengths.
fn front_entry(key: u128, packed: u64) -> [u64; 3] {
    [key as u64, (key >> 64) as u64, packed]
}

/// The key of the short word `text[start..end]` (at most [`SHORT_BYTES`]
/// bytes, at least one): its bytes, its length in the last byte (so no two
/// words share one). Read as one load from `text` where 16 bytes follow
/// `start`; building it byte by byte on the stack and reading it back made
/// the processor wait for the stores.
fn short_key(text: &[u8], start: usize, end: usize) -> u128 {
    let n = end - start;
    let raw = match text.get(start..start + 16) {
        Some(b) => u128::from_le_bytes(b.try_into().expect("16 bytes")),
        None => {
            let mut b = [0u8; 16];
            b[..n].copy_from_slice(&text[start..end]);
            u128::from_le_bytes(b)
        }
    };
    (raw & ((1u128 << (8 * n)) - 1)) | ((n as u128) << 120)
}

/// Where the tokens of a text go: their count, and their byte lengths when
/// asked for.
struct Out<'a> {
    n: usize,
    lens: Option<&'a mut Vec<u32>>,
}

impl Out<'_> {
    fn packed(&mut self, p: u64) {
        let k = (p & 15) as usize;
        self.n += k;
        if let Some(v) = self.lens.as_deref_mut() {
            v.extend((1..=k).map(|i| ((p >> (4 * i)) & 15) as u32));
        }
    }

    fn lens(&mut self, lens: &[u32]) {
        self.n += lens.len();
        if let Some(v) = self.lens.as_deref_mut() {
            v.extend_from_slice(lens);
        }
    }
}

/// GPT-2's byte → symbol map (printable bytes stand for themselves, the
/// others are shifted past 255).
fn byte_chars() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut n = 0;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        map[usize::from(b)] = if printable {
            char::from(b)
        } else {
            n += 1;
            char::from_u32(255 + n).expect("valid scalar")
        };
    }
    map
}

fn is_null_or(v: Option<&Json>, ok: &dyn Fn(&Json) -> bool) -> bool {
    v.is_none_or(|v| v.is_null() || ok(v))
}

/// The merge table's key of the symbol pair (`left`, `right`).
fn pair(left: u32, right: u32) -> u64 {
    (u64::from(left) << 32) | u64::from(right)
}

impl FastBpe {
    /// The counter for a `tokenizer.json`, when its configuration is one
    /// this module reproduces exactly.
    pub fn from_json(t: &Json) -> Option<FastBpe> {
        if !is_null_or(t.get("normalizer"), &|_| false) {
            return None;
        }
        if t.get("added_tokens")
            .and_then(Json::as_array)
            .is_some_and(|a| {
                a.iter()
                    .any(|x| x.get("special") != Some(&Json::Bool(true)))
            })
        {
            return None;
        }
        let pattern = split_pattern(t.get("pre_tokenizer")?)?;
        let model = t.get("model")?;
        if model.get("type")?.as_str()? != "BPE"
            || !is_null_or(model.get("dropout"), &|_| false)
            || model.get("byte_fallback").and_then(Json::as_bool) == Some(true)
            || !is_null_or(model.get("continuing_subword_prefix"), &|v| v == "")
            || !is_null_or(model.get("end_of_word_suffix"), &|v| v == "")
        {
            return None;
        }
        let chars = byte_chars();
        let mut char_byte: HashMap<char, u8> = HashMap::new();
        for (b, c) in chars.iter().enumerate() {
            char_byte.insert(*c, b as u8);
        }
        let to_bytes = |s: &str| -> Option<Vec<u8>> {
            s.chars().map(|c| char_byte.get(&c).copied()).collect()
        };
        let vocab = model.get("vocab")?.as_object()?;
        let mut ids: HashMap<&str, u32> = HashMap::with_capacity(vocab.len());
        let mut token_len = vec![0u32; vocab.len() + 1];
        let mut seen = std::collections::HashSet::with_capacity(vocab.len());
        let mut distinct_ids = true;
        for (k, v) in vocab {
            let id = u32::try_from(v.as_u64()?).ok()?;
            distinct_ids &= seen.insert(id);
            ids.insert(k.as_str(), id);
            let idx = id as usize;
            if idx >= token_len.len() {
                token_len.resize(idx + 1, 0);
            }
            token_len[idx] = u32::try_from(to_bytes(k)?.len()).ok()?;
        }
        let mut byte_ids = [0u32; 256];
        for (b, c) in chars.iter().enumerate() {
            byte_ids[b] = *ids.get(c.to_string().as_str())?;
        }
        let mut merges = foldhash::HashMap::default();
        for (rank, m) in model.get("merges")?.as_array()?.iter().enumerate() {
            let (a, b) = match m {
                Json::String(s) => s.split_once(' ')?,
                Json::Array(p) if p.len() == 2 => (p[0].as_str()?, p[1].as_str()?),
                _ => return None,
            };
            let merged = format!("{a}{b}");
            let new = *ids.get(merged.as_str())?;
            // As in `tokenizers`, a pair listed twice keeps its last rank.
            merges.insert(
                pair(*ids.get(a)?, *ids.get(b)?),
                (u32::try_from(rank).ok()?, new),
            );
        }
        let whole_words = if model.get("ignore_merges").and_then(Json::as_bool) == Some(true) {
            let mut m = HashMap::with_capacity(vocab.len());
            for (k, v) in vocab {
                m.insert(to_bytes(k)?, u32::try_from(v.as_u64()?).ok()?);
            }
            Some(m)
        } else {
            None
        };
        Some(FastBpe {
            split: Splitter::new(&pattern)?,
            byte_ids,
            merges: Arc::new(merges),
            whole_words: whole_words.map(Arc::new),
            token_len: token_len.into(),
            distinct_ids,
            cache: HashMap::default(),
            short: HashMap::default(),
            front: vec![[0; 3]; 1 << FRONT_BITS].into_boxed_slice(),
            bounds: Vec::new(),
        })
    }

    /// The byte lengths of the tokens of `text`; `None` when a word is too
    /// long for this counter (or the regex fails), so the crate must count.
    pub fn token_lengths(&mut self, text: &str, out: &mut Vec<u32>) -> Option<()> {
        self.tokens(
            text,
            &mut Out {
                n: 0,
                lens: Some(out),
            },
        )
    }

    /// The number of tokens of `text` (see [`FastBpe::token_lengths`]).
    pub fn count(&mut self, text: &str) -> Option<usize> {
        let mut out = Out { n: 0, lens: None };
        self.tokens(text, &mut out)?;
        Some(out.n)
    }

    fn tokens(&mut self, text: &str, out: &mut Out<'_>) -> Option<()> {
        let mut bounds = std::mem::take(&mut self.bounds);
        bounds.clear();
        self.split.bounds(text, &mut bounds)?;
        let b = text.as_bytes();
        let mut last = 0;
        for &(start, end) in &bounds {
            if start > last {
                self.word(b, last, start, out)?;
            }
            self.word(b, start, end, out)?;
            last = end;
        }
        if last < b.len() {
            self.word(b, last, b.len(), out)?;
        }
        if bounds.capacity() <= KEEP_BOUNDS {
            self.bounds = bounds;
        }
        Some(())
    }

    /// The tokens of the word `text[start..end]`.
    fn word(&mut self, text: &[u8], start: usize, end: usize, out: &mut Out<'_>) -> Option<()> {
        let w = &text[start..end];
        if w.is_empty() {
            return Some(());
        }
        let short = (w.len() <= SHORT_BYTES).then(|| short_key(text, start, end));
        if let Some(key) = short {
            let slot = front_slot(key);
            let [lo, hi, packed] = self.front[slot];
            if lo == key as u64 && hi == (key >> 64) as u64 {
                crate::stats_env::lookup(Cache::Words, true);
                out.packed(packed);
                return Some(());
            }
            if let Some(&packed) = self.short.get(&key) {
                crate::stats_env::lookup(Cache::Words, true);
                self.front[slot] = front_entry(key, packed);
                out.packed(packed);
                return Some(());
            }
        } else if let Some(lens) = self.cache.get(w) {
            crate::stats_env::lookup(Cache::Words, true);
            out.lens(lens);
            return Some(());
        }
        crate::stats_env::lookup(Cache::Words, false);
        if w.len() > MAX_WORD_BYTES {
            return None;
        }
        let lens: Box<[u32]> = match self.whole_words.as_ref().and_then(|v| v.get(w)) {
            Some(id) => Box::new([self.token_len[*id as usize]]),
            None => self
                .merge(w)
                .into_iter()
                .map(|id| self.token_len[id as usize])
                .collect(),
        };
        out.lens(&lens);
        if let Some(key) = short {
            let packed = pack(&lens);
            if self.short.len() >= CACHE_SHORT_WORDS {
                self.short.clear();
            }
            self.short.insert(key, packed);
            self.front[front_slot(key)] = front_entry(key, packed);
            return Some(());
        }
        if self.cache.len() >= CACHE_LONG_WORDS {
            self.cache.clear();
        }
        self.cache.insert(w.into(), lens);
        Some(())
    }

    /// BPE merges on one word: the lowest-ranked adjacent pair first, the
    /// leftmost of equal rank first, until no pair merges. Each pair's rank
    /// is looked up once and kept; a merge looks up only the two new pairs
    /// beside it.
    fn merge(&self, w: &[u8]) -> Vec<u32> {
        let mut syms: Vec<u32> = w.iter().map(|b| self.byte_ids[usize::from(*b)]).collect();
        let rank_of = |l: u32, r: u32| self.merges.get(&pair(l, r)).copied();
        // ranks[i]: the merge of syms[i] and syms[i + 1], if any.
        let mut ranks: Vec<Option<(u32, u32)>> =
            syms.windows(2).map(|p| rank_of(p[0], p[1])).collect();
        loop {
            let mut best: Option<(u32, usize)> = None;
            for (i, r) in ranks.iter().enumerate() {
                if let Some((rank, _)) = *r
                    && best.is_none_or(|(b, _)| rank < b)
                {
                    best = Some((rank, i));
                }
            }
            let Some((_, i)) = best else {
                return syms;
            };
            let (_, new) = ranks[i].expect("the best pair merges");
            syms[i] = new;
            syms.remove(i + 1);
            ranks.remove(i);
            if i > 0 {
                ranks[i - 1] = rank_of(syms[i - 1], new);
            }
            if i < ranks.len() {
                ranks[i] = rank_of(new, syms[i + 1]);
            }
        }
    }
}

/// The split regex of a supported pre-tokenizer: `ByteLevel` with its own
/// regex, or a `Split` (isolated, not inverted) followed by a `ByteLevel`
/// without one; never a prefix space.
fn split_pattern(p: &Json) -> Option<String> {
    let byte_level = |p: &Json, with_regex: bool| {
        p.get("type").and_then(Json::as_str) == Some("ByteLevel")
            && p.get("add_prefix_space").and_then(Json::as_bool) != Some(true)
            && p.get("use_regex").and_then(Json::as_bool).unwrap_or(true) == with_regex
    };
    if byte_level(p, true) {
        return Some(GPT2_PATTERN.to_string());
    }
    let steps = p.get("pretokenizers")?.as_array()?;
    if p.get("type")?.as_str()? != "Sequence" || steps.len() != 2 || !byte_level(&steps[1], false) {
        return None;
    }
    let split = &steps[0];
    if split.get("type")?.as_str()? != "Split"
        || split.get("behavior")?.as_str()? != "Isolated"
        || split.get("invert").and_then(Json::as_bool) == Some(true)
    {
        return None;
    }
    split
        .get("pattern")?
        .get("Regex")?
        .as_str()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits as the `tokenizers` crate does: `fancy-regex` on the pattern
    /// itself.
    fn reference(re: &Splitter, text: &str) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        re.bounds(text, &mut out).unwrap();
        out
    }

    /// Reproducible draws below `n` (xorshift from `seed`).
    fn draws(seed: u64) -> impl FnMut(usize) -> usize {
        let mut z = seed;
        move |n| {
            z ^= z << 13;
            z ^= z >> 7;
            z ^= z << 17;
            (z % n as u64) as usize
        }
    }

    /// The fixture tokenizer's counter and the crate's own tokenizer.
    fn fixture() -> (FastBpe, tokenizers::Tokenizer) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/tokenizer/chatml/tokenizer.json");
        let json: Json = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let fast = FastBpe::from_json(&json).expect("a byte-level BPE tokenizer");
        (fast, tokenizers::Tokenizer::from_file(&path).unwrap())
    }

    #[test]
    fn token_lengths_are_the_crates_whether_remembered_or_not() {
        let (mut fast, crate_tok) = fixture();
        let mut next = draws(0x9E37_79B9_7F4A_7C15);
        // Words of every length around the short words' 15 bytes, from a
        // few letters (so they repeat and are found remembered, in the
        // front table or behind it) or from many (so the short-word cache
        // fills and starts over), with spaces, punctuation and non-ASCII
        // between them.
        let seps = [
            " ", "  ", "\n", ", ", ".\n\n", "\t", "é", "中文", "'s ", " 12 ",
        ];
        let mut texts = 0;
        let mut distinct = std::collections::HashSet::new();
        while texts < 3_000 || distinct.len() <= CACHE_SHORT_WORDS {
            let letters: &[u8] = if texts % 3 == 0 {
                b"ab"
            } else {
                b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
            };
            let mut text = String::new();
            for _ in 0..1 + next(40) {
                let word: String = (0..1 + next(20))
                    .map(|_| char::from(letters[next(letters.len())]))
                    .collect();
                distinct.insert(format!(" {word}"));
                text.push_str(&word);
                text.push_str(seps[next(seps.len())]);
            }
            // Ends of every kind: the last word may end the text.
            if next(2) == 0 {
                text.pop();
            }
            let text = text.as_str();
            let enc = crate_tok.encode(text, false).unwrap();
            let want: Vec<u32> = enc
                .get_tokens()
                .iter()
                .map(|t| t.chars().count() as u32)
                .collect();
            let mut got = Vec::new();
            fast.token_lengths(text, &mut got).unwrap();
            assert_eq!(got, want, "{text:?}");
            assert_eq!(fast.count(text), Some(want.len()), "{text:?}");
            texts += 1;
        }
    }

    #[test]
    fn packed_lengths_unpack_to_themselves() {
        for lens in [
            vec![1],
            vec![15],
            vec![1; 15],
            (1..=15).collect::<Vec<u32>>(),
            vec![3, 15, 1, 7],
        ] {
            let mut v = Vec::new();
            let mut out = Out {
                n: 0,
                lens: Some(&mut v),
            };
            out.packed(pack(&lens));
            assert_eq!(out.n, lens.len());
            assert_eq!(v, lens);
        }
        // Keys of different words differ, whatever follows them in the text.
        let text = b"abcdefghijklmnopqrstuvwxyz";
        assert_ne!(short_key(text, 0, 3), short_key(text, 0, 4));
        assert_eq!(short_key(text, 0, 3), short_key(b"abc", 0, 3));
        assert_eq!(short_key(text, 11, 26), short_key(&text[11..], 0, 15));
    }

    #[test]
    fn the_ascii_split_of_gpt2s_pattern_is_the_regexs() {
        let fast = Splitter::new(GPT2_PATTERN).unwrap();
        let re = Splitter::Fancy(fancy_regex::Regex::new(GPT2_PATTERN).unwrap());
        assert!(matches!(fast, Splitter::Fast { gpt2: true, .. }));
        // Characters of every class, ASCII or not (letters, numbers and
        // spaces beyond ASCII among them), and the contractions' letters.
        let alphabet: Vec<&str> = vec![
            "a", "Z", "s", "t", "r", "e", "v", "l", "m", "d", "'", "0", "7", " ", " ", " ", "\t",
            "\n", "\r", "\u{b}", "\u{c}", ".", "?", "{", "\"", "-", "é", "中", "\u{a0}",
            "\u{3000}", "٣", "²", "🙂", "\u{85}",
        ];
        let mut next = draws(0x2545_F491_4F6C_DD1D);
        for _ in 0..5_000 {
            let len = 1 + next(24);
            let text: String = (0..len).map(|_| alphabet[next(alphabet.len())]).collect();
            let mut got = Vec::new();
            fast.bounds(&text, &mut got).unwrap();
            assert_eq!(got, reference(&re, &text), "{text:?}");
        }
        for text in ["it's   we'll  x", "  \n\n  a", "a\t\tb ", "'re'", " 'S"] {
            let mut got = Vec::new();
            fast.bounds(text, &mut got).unwrap();
            assert_eq!(got, reference(&re, text), "{text:?}");
        }
    }
}
