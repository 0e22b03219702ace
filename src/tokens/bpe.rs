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
    /// Each word's tokens, as byte lengths.
    cache: HashMap<Box<[u8]>, Box<[u32]>, BuildFast>,
    /// The same for words of at most 7 bytes (most of them), keyed by the
    /// word in 8 bytes (its bytes, its length last) and with the lengths
    /// inline: no pointer to follow and no bytes to compare out of line.
    /// (An array key hashes as a byte slice does, so the cache statistics
    /// count it with the word cache.)
    short: HashMap<[u8; 8], (u8, [u8; 7]), BuildFast>,
    /// The most recent short words in a direct-mapped table in front of
    /// `short`: (key as a word, tokens packed as a word), `0` for empty (a
    /// key holds its length, never 0). Small enough to stay in the
    /// processor's nearest caches, where a lookup in `short` (control
    /// bytes, then the entry) mostly waits for memory.
    front: Box<[(u64, u64)]>,
}

/// Slots of [`FastBpe::front`], as a power of two.
const FRONT_BITS: u32 = 11;

/// The slot of `key` in [`FastBpe::front`].
fn front_slot(key: u64) -> usize {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - FRONT_BITS)) as usize
}

/// A short word's token lengths, packed as [`FastBpe::front`] keeps them:
/// the count in the low byte, then the lengths.
fn pack(n: u8, lens: [u8; 7]) -> u64 {
    let mut b = [0u8; 8];
    b[0] = n;
    b[1..].copy_from_slice(&lens);
    u64::from_le_bytes(b)
}

/// The merge table's key of the symbol pair (`left`, `right`).
fn pair(left: u32, right: u32) -> u64 {
    (u64::from(left) << 32) | u64::from(right)
}

/// A word of at most 7 bytes in 8: its bytes, then its length last (so no
/// two words share one).
fn short_key(w: &[u8]) -> Option<[u8; 8]> {
    if w.len() > 7 {
        return None;
    }
    let mut k = [0u8; 8];
    k[..w.len()].copy_from_slice(w);
    k[7] = w.len() as u8;
    Some(k)
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
            front: vec![(0, 0); 1 << FRONT_BITS].into_boxed_slice(),
        })
    }

    /// The byte lengths of the tokens of `text`; `None` when a word is too
    /// long for this counter (or the regex fails), so the crate must count.
    pub fn token_lengths(&mut self, text: &str, out: &mut Vec<u32>) -> Option<()> {
        let mut bounds = Vec::new();
        self.split.bounds(text, &mut bounds)?;
        let mut last = 0;
        for (start, end) in bounds {
            if start > last {
                self.word(&text.as_bytes()[last..start], out)?;
            }
            self.word(&text.as_bytes()[start..end], out)?;
            last = end;
        }
        if last < text.len() {
            self.word(&text.as_bytes()[last..], out)?;
        }
        Some(())
    }

    /// The number of tokens of `text` (see [`FastBpe::token_lengths`]).
    pub fn count(&mut self, text: &str) -> Option<usize> {
        let mut lens = Vec::new();
        self.token_lengths(text, &mut lens)?;
        Some(lens.len())
    }

    fn word(&mut self, w: &[u8], out: &mut Vec<u32>) -> Option<()> {
        if w.is_empty() {
            return Some(());
        }
        let short = short_key(w);
        if let Some(k) = short {
            let key = u64::from_le_bytes(k);
            let slot = front_slot(key);
            let (front_key, packed) = self.front[slot];
            if front_key == key {
                crate::stats_env::lookup(Cache::Words, true);
                let b = packed.to_le_bytes();
                out.extend(b[1..=usize::from(b[0])].iter().map(|l| u32::from(*l)));
                return Some(());
            }
            if let Some((n, lens)) = self.short.get(&k) {
                crate::stats_env::lookup(Cache::Words, true);
                self.front[slot] = (key, pack(*n, *lens));
                out.extend(lens[..usize::from(*n)].iter().map(|l| u32::from(*l)));
                return Some(());
            }
        } else if let Some(lens) = self.cache.get(w) {
            crate::stats_env::lookup(Cache::Words, true);
            out.extend_from_slice(lens);
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
        out.extend_from_slice(&lens);
        if let Some(k) = short {
            // A word of 7 bytes has at most 7 tokens, each at most 7 bytes.
            let mut inline = [0u8; 7];
            for (to, l) in inline.iter_mut().zip(lens.iter()) {
                *to = *l as u8;
            }
            if self.short.len() >= CACHE_SHORT_WORDS {
                self.short.clear();
            }
            self.short.insert(k, (lens.len() as u8, inline));
            self.front[front_slot(u64::from_le_bytes(k))] =
                (u64::from_le_bytes(k), pack(lens.len() as u8, inline));
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
        let mut z: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = |n: usize| {
            z ^= z << 13;
            z ^= z >> 7;
            z ^= z << 17;
            (z % n as u64) as usize
        };
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
