//! Duplicates: exact lines written once, near-identical exchanges capped.
//!
//! - An exact duplicate is a line whose bytes (after redaction, before
//!   `meta` is added) equal a line already written, in this run or in a
//!   committed run of the same state. Its fingerprint is a 64-bit FNV-1a
//!   hash of those bytes.
//! - A near duplicate is an exchange whose normalised text equals that of
//!   exchanges already written: letters lower-cased, whitespace collapsed,
//!   and every number masked, together with the separators that join
//!   numbers into one figure (coordinates `12,-4,7`, times `13:25:44`,
//!   dates `2026-11-25`, decimals). At most the cap of them are kept per
//!   normalised exchange; the rest are skipped.

use std::collections::{HashMap, HashSet};

use crate::hash::fingerprint;
use crate::model::Message;

use super::Memory;

/// Duplicate bookkeeping of one run, over the state's memory.
///
/// The memory's sorted lists are borrowed and looked up by binary search;
/// only what this run adds or changes is held in its own tables, and
/// [`Dedupe::into_update`] hands those to the commit, which merges them
/// into the memory ([`Update::apply`]). A large state's lists are so never
/// copied into hash tables beside themselves.
#[derive(Debug, Default)]
pub struct Dedupe<'m> {
    exact_base: &'m [u64],
    /// Fingerprints first seen in this run.
    exact: HashSet<u64>,
    near_base: &'m [(u64, u32)],
    /// Counts this run changed (whole counts, not increments).
    near: HashMap<u64, u32>,
    /// Exchanges of the session at hand let through the cap but not yet
    /// written: they count toward it only once written.
    pending: HashMap<u64, u32>,
    sides_base: &'m [(u64, u32)],
    /// The splits each normalised exchange was written to (1 train, 2
    /// valid), where this run changed them.
    sides: HashMap<u64, u32>,
    /// The splits the session at hand let exchanges through for (not yet
    /// written; only what is written counts for later sessions).
    session_sides: HashMap<u64, u32>,
    /// The near keys (and turn times) of each line written in this run,
    /// by its print.
    lines: Vec<super::LineKeys>,
    /// Exchanges this run's cap held back (see `Memory::held_back`).
    held: Vec<HeldBack>,
    cap: usize,
    pub exact_dropped: usize,
    pub near_dropped: usize,
}

/// What a run adds to the memory (see [`Dedupe::into_update`]).
#[derive(Debug, Default)]
pub struct Update {
    /// New fingerprints, sorted.
    exact: Vec<u64>,
    /// Changed counts and splits, sorted by key.
    near: Vec<(u64, u32)>,
    sides: Vec<(u64, u32)>,
    lines: Vec<super::LineKeys>,
    held: Vec<HeldBack>,
}

/// An exchange the near-duplicate cap held back: its normalised key, its
/// session, and the turn (its first state.db row, for a state.db session)
/// and time (its user turn's), by which it is given back.
#[derive(Debug, Clone, PartialEq, PartialOrd, serde::Serialize, serde::Deserialize)]
pub struct HeldBack(pub u64, pub String, pub Option<i64>, pub Option<f64>);

/// Takes out of `memory` the exchanges held back under any of `keys` (a
/// line that counted toward them left the dataset): the caller gives them
/// back to the next export.
pub fn release_held(memory: &mut Memory, keys: &[u64]) -> Vec<HeldBack> {
    if memory.held_back.is_empty() || keys.is_empty() {
        return Vec::new();
    }
    let keys: HashSet<u64> = keys.iter().copied().collect();
    let (out, kept) = std::mem::take(&mut memory.held_back)
        .into_iter()
        .partition(|h| keys.contains(&h.0));
    memory.held_back = kept;
    out
}

/// The value of `key` in a list sorted by key.
fn lookup(base: &[(u64, u32)], key: u64) -> Option<u32> {
    base.binary_search_by_key(&key, |e| e.0)
        .ok()
        .map(|i| base[i].1)
}

/// The run's own entry for `key`, first filled from the memory's list.
fn entry<'a>(over: &'a mut HashMap<u64, u32>, base: &[(u64, u32)], key: u64) -> &'a mut u32 {
    over.entry(key)
        .or_insert_with(|| lookup(base, key).unwrap_or(0))
}

/// The value of `key`: the run's own, else the memory's.
fn current(over: &HashMap<u64, u32>, base: &[(u64, u32)], key: u64) -> u32 {
    over.get(&key)
        .copied()
        .or_else(|| lookup(base, key))
        .unwrap_or(0)
}

/// Merges the sorted `new`, none of which `v` holds, into the sorted `v`
/// in place (from the back: no second copy of a large list is made).
fn merge_new<T: Copy + Ord>(v: &mut Vec<T>, new: &[T]) {
    let Some(first) = new.first() else {
        return;
    };
    if v.last().is_none_or(|last| last < first) {
        v.extend_from_slice(new);
        return;
    }
    let (mut i, mut j) = (v.len(), new.len());
    v.resize(i + j, *first);
    while j > 0 {
        if i > 0 && v[i - 1] > new[j - 1] {
            v[i + j - 1] = v[i - 1];
            i -= 1;
        } else {
            v[i + j - 1] = new[j - 1];
            j -= 1;
        }
    }
}

/// A sorted list of (key, value) with `over`'s values (sorted by key) in
/// place of its own, and `over`'s other keys added.
fn merge_over(v: &mut Vec<(u64, u32)>, over: &[(u64, u32)]) {
    let mut new = Vec::new();
    for &(key, value) in over {
        match v.binary_search_by_key(&key, |e| e.0) {
            Ok(i) => v[i].1 = value,
            Err(_) => new.push((key, value)),
        }
    }
    merge_new(v, &new);
}

fn sorted(map: HashMap<u64, u32>) -> Vec<(u64, u32)> {
    let mut v: Vec<(u64, u32)> = map.into_iter().collect();
    v.sort_unstable();
    v
}

impl<'m> Dedupe<'m> {
    pub fn new(memory: &'m Memory, cap: usize) -> Dedupe<'m> {
        Dedupe {
            exact_base: &memory.exact,
            near_base: &memory.near,
            sides_base: &memory.sides,
            cap,
            ..Dedupe::default()
        }
    }

    /// Whether a line with the fingerprint `print` ([`line_print`]) is new
    /// (and remembers it). With `enabled` false every line is new, but still
    /// remembered.
    pub fn first_time(&mut self, print: u64, enabled: bool) -> bool {
        let new = self.exact_base.binary_search(&print).is_err() && self.exact.insert(print);
        if !new && enabled {
            self.exact_dropped += 1;
            return false;
        }
        true
    }

    /// Whether one more exchange with this normalised key fits under the
    /// cap (and counts it when it does).
    pub fn under_cap(&mut self, key: u64) -> bool {
        if self.cap > 0 && current(&self.near, self.near_base, key) as usize >= self.cap {
            self.near_dropped += 1;
            return false;
        }
        let n = entry(&mut self.near, self.near_base, key);
        *n = n.saturating_add(1);
        true
    }

    /// Whether one more exchange with this key fits under the cap, counting
    /// those written and those of this session let through so far (it is
    /// counted as written by [`Dedupe::written`]).
    pub fn reserve(&mut self, key: u64) -> bool {
        let written = current(&self.near, self.near_base, key);
        let pending = self.pending.entry(key).or_default();
        if self.cap > 0 && (written + *pending) as usize >= self.cap {
            self.near_dropped += 1;
            return false;
        }
        *pending += 1;
        true
    }

    /// The cap held back an exchange of `session` with this key: it is
    /// remembered, so that a place a removed line frees goes to it.
    pub fn held_back(&mut self, key: u64, session: &str, (turn, time): (Option<i64>, Option<f64>)) {
        self.held
            .push(HeldBack(key, session.to_string(), turn, time));
    }

    /// An exchange let through by [`Dedupe::reserve`] was written.
    pub fn written(&mut self, key: u64) {
        if let Some(p) = self.pending.get_mut(&key) {
            *p = p.saturating_sub(1);
        }
        let n = entry(&mut self.near, self.near_base, key);
        *n = n.saturating_add(1);
    }

    /// A line with the fingerprint `print` was written, counting the near
    /// keys `keys` of turns at their times (see `Memory::line_keys`).
    pub fn wrote_line(&mut self, print: u64, keys: Vec<(u64, Option<f64>)>) {
        let secs =
            |t: Option<f64>| t.map_or(NO_TIME, |t| t.clamp(0.0, f64::from(NO_TIME - 1)) as u32);
        self.lines
            .push((print, keys.into_iter().map(|(k, t)| (k, secs(t))).collect()));
    }

    /// A new session: what the last one let through and did not write no
    /// longer holds a place under the cap.
    pub fn new_session(&mut self) {
        self.pending.clear();
        self.session_sides.clear();
    }

    /// Whether the normalised exchange `key` is already in the other split
    /// than `valid` says: written there, or let through for it earlier in
    /// the session at hand (whose units can lie in both splits); else it is
    /// let through for this one (it counts for later sessions once
    /// [`Dedupe::wrote_in`] says it was written).
    pub fn in_other_split(&mut self, key: u64, valid: bool) -> bool {
        let (mine, other) = sides(valid);
        let written = current(&self.sides, self.sides_base, key);
        let here = self.session_sides.entry(key).or_default();
        if (written | *here) & other != 0 {
            return true;
        }
        *here |= mine;
        false
    }

    /// The exchange `key` was written to the split `valid` says.
    pub fn wrote_in(&mut self, key: u64, valid: bool) {
        *entry(&mut self.sides, self.sides_base, key) |= sides(valid).0;
    }

    /// What this run adds to the memory it was made over, owned (the
    /// memory is no longer borrowed).
    pub fn into_update(self) -> Update {
        let mut exact: Vec<u64> = self.exact.into_iter().collect();
        exact.sort_unstable();
        Update {
            exact,
            near: sorted(self.near),
            sides: sorted(self.sides),
            lines: self.lines,
            held: self.held,
        }
    }
}

impl Update {
    /// Merges this run's fingerprints into `memory` (the memory the run's
    /// [`Dedupe`] was made over).
    pub fn apply(self, memory: &mut Memory) {
        // The run's fingerprints are those the memory did not hold.
        merge_new(&mut memory.exact, &self.exact);
        merge_over(&mut memory.near, &self.near);
        merge_over(&mut memory.sides, &self.sides);
        memory.line_keys.add(self.lines);
        if !self.held.is_empty() {
            memory.held_back.extend(self.held);
            memory
                .held_back
                .sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
            memory.held_back.dedup();
        }
    }
}

/// The near keys each line counted, with its turns' times, by the line's
/// fingerprint (see `Memory::line_keys`): one sorted list of
/// fingerprints and flat lists of keys and times, so that a few hundred
/// thousand lines cost no allocation each.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LineKeyTable {
    /// Line fingerprints, sorted, each once.
    prints: Vec<u64>,
    /// Where each line's keys end in `keys` and `times`.
    ends: Vec<usize>,
    keys: Vec<u64>,
    times: Vec<u32>,
}

impl LineKeyTable {
    pub const fn new() -> LineKeyTable {
        LineKeyTable {
            prints: Vec::new(),
            ends: Vec::new(),
            keys: Vec::new(),
            times: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.prints.is_empty()
    }

    pub fn len(&self) -> usize {
        self.prints.len()
    }

    fn range(&self, i: usize) -> std::ops::Range<usize> {
        (if i == 0 { 0 } else { self.ends[i - 1] })..self.ends[i]
    }

    fn push(&mut self, print: u64, keys: impl IntoIterator<Item = (u64, u32)>) {
        for (k, t) in keys {
            self.keys.push(k);
            self.times.push(t);
        }
        self.prints.push(print);
        self.ends.push(self.keys.len());
    }

    /// The `i`th line: its fingerprint, keys and times.
    pub fn line(&self, i: usize) -> (u64, &[u64], &[u32]) {
        let r = self.range(i);
        (self.prints[i], &self.keys[r.clone()], &self.times[r])
    }

    /// Each line's fingerprint and its keys with their times.
    fn iter(&self) -> impl Iterator<Item = (u64, impl Iterator<Item = (u64, u32)> + '_)> {
        (0..self.len()).map(|i| {
            let (print, keys, times) = self.line(i);
            (print, keys.iter().copied().zip(times.iter().copied()))
        })
    }

    /// The keys and times of the line with the fingerprint `print`.
    pub fn get(&self, print: u64) -> Option<(&[u64], &[u32])> {
        let i = self.prints.binary_search(&print).ok()?;
        let r = self.range(i);
        Some((&self.keys[r.clone()], &self.times[r]))
    }

    /// Removes the line with the fingerprint `print`; its keys.
    pub fn remove(&mut self, print: u64) -> Option<Vec<u64>> {
        let i = self.prints.binary_search(&print).ok()?;
        let r = self.range(i);
        let n = r.len();
        let keys: Vec<u64> = self.keys.drain(r.clone()).collect();
        self.times.drain(r);
        self.prints.remove(i);
        self.ends.remove(i);
        for e in &mut self.ends[i..] {
            *e -= n;
        }
        Some(keys)
    }

    /// Adds lines; a fingerprint already held keeps its keys.
    pub fn add(&mut self, mut lines: Vec<super::LineKeys>) {
        if lines.is_empty() {
            return;
        }
        lines.sort_by_key(|l| l.0);
        lines.dedup_by_key(|l| l.0);
        lines.retain(|l| self.prints.binary_search(&l.0).is_err());
        if lines
            .first()
            .is_none_or(|l| self.prints.last().is_none_or(|p| *p < l.0))
        {
            // The common case: a first run, or fingerprints past the last.
            for (print, keys) in lines {
                self.push(print, keys);
            }
            return;
        }
        // From the back, in place: each list grows once, by what is added.
        let added: usize = lines.iter().map(|l| l.1.len()).sum();
        let (mut i, mut j) = (self.prints.len(), lines.len());
        let mut w = self.keys.len() + added;
        self.prints.resize(i + j, 0);
        self.ends.resize(i + j, 0);
        self.keys.resize(w, 0);
        self.times.resize(w, 0);
        while j > 0 {
            let k = i + j - 1;
            self.ends[k] = w;
            if i > 0 && self.prints[i - 1] > lines[j - 1].0 {
                let r = self.range(i - 1);
                w -= r.len();
                self.keys.copy_within(r.clone(), w);
                self.times.copy_within(r, w);
                self.prints[k] = self.prints[i - 1];
                i -= 1;
            } else {
                let (print, keys) = &lines[j - 1];
                w -= keys.len();
                for (n, (key, time)) in keys.iter().enumerate() {
                    self.keys[w + n] = *key;
                    self.times[w + n] = *time;
                }
                self.prints[k] = *print;
                j -= 1;
            }
        }
    }

    /// Sorted by fingerprint, each once (as a state file read back holds
    /// them unless it was edited).
    fn sorted(self) -> LineKeyTable {
        if self.prints.windows(2).all(|w| w[0] < w[1]) {
            return self;
        }
        let lines: Vec<super::LineKeys> = self.iter().map(|(p, k)| (p, k.collect())).collect();
        let mut table = LineKeyTable::new();
        table.add(lines);
        table
    }
}

/// The times of the turns a line with the fingerprint `print` trained
/// on (whole seconds), when the state recorded them.
pub fn line_times(memory: &Memory, print: u64) -> Option<Vec<Option<f64>>> {
    let (_, times) = memory.line_keys.get(print)?;
    let time = |secs: u32| (secs != NO_TIME).then_some(f64::from(secs));
    Some(times.iter().map(|t| time(*t)).collect())
}

/// A line's fingerprint: its bytes without `meta`, as they were
/// fingerprinted when written.
pub fn body_print(line: &[u8]) -> u64 {
    match line.windows(8).rposition(|w| w == b",\"meta\":") {
        Some(at) => line_print(&[&line[..at], b"}"].concat()),
        None => line_print(line),
    }
}

/// A line with the fingerprint `print` left the dataset: its exact
/// fingerprint goes, and each near key it counted is counted once less
/// (a key at 0 goes, with the splits it was seen in; a key still counted
/// keeps them, as a line left in a split may hold it).
///
/// Returns the keys counted once less.
pub fn forget_line(memory: &mut Memory, print: u64) -> Vec<u64> {
    if let Ok(i) = memory.exact.binary_search(&print) {
        memory.exact.remove(i);
    }
    let Some(keys) = memory.line_keys.remove(print) else {
        return Vec::new();
    };
    let mut less = Vec::with_capacity(keys.len());
    for key in keys {
        let Ok(k) = memory.near.binary_search_by_key(&key, |n| n.0) else {
            continue;
        };
        memory.near[k].1 = memory.near[k].1.saturating_sub(1);
        less.push(key);
        if memory.near[k].1 == 0 {
            memory.near.remove(k);
            if let Ok(s) = memory.sides.binary_search_by_key(&key, |n| n.0) {
                memory.sides.remove(s);
            }
        }
    }
    less
}

/// The bits of (this split, the other split) in `Dedupe::sides`.
fn sides(valid: bool) -> (u32, u32) {
    if valid { (2, 1) } else { (1, 2) }
}

/// The fingerprint of a line's bytes.
pub fn line_print(line: &[u8]) -> u64 {
    fingerprint(line)
}

/// Lower-cased text with whitespace collapsed and figures masked as `#`.
pub fn normalise(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    normalise_into(text, &mut out);
    String::from_utf8(out).expect("normalised text is UTF-8")
}

/// [`normalise`], appended to `out` (UTF-8). ASCII text is read as its
/// bytes, a run of plain characters copied at once; other text as its
/// characters (the same rules over either).
fn normalise_into(text: &str, out: &mut Vec<u8>) {
    if text.is_ascii() {
        normalise_ascii(text.as_bytes(), out);
    } else {
        normalise_chars(&text.chars().collect::<Vec<char>>(), out);
    }
}

/// Whitespace as `char::is_whitespace` has it below U+0080: U+0009 to
/// U+000D (with U+000B, which `u8::is_ascii_whitespace` leaves out) and
/// the space.
const fn ascii_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t'..=b'\r')
}

/// What a byte is to [`normalise_ascii`]: a figure's digit, a space, a
/// sign that may start a figure, or a plain byte (copied, lower-cased).
const PLAIN: u8 = 0;
const DIGIT: u8 = 1;
const SPACE: u8 = 2;
const SIGN: u8 = 3;
const CLASS: [u8; 256] = {
    let mut t = [PLAIN; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_digit() {
            DIGIT
        } else if ascii_space(c) {
            SPACE
        } else if c == b'-' || c == b'+' {
            SIGN
        } else {
            PLAIN
        };
        b += 1;
    }
    t
};

/// Whether byte `d` is plain to [`normalise_ascii`] (as [`CLASS`] has it,
/// in a form the compiler can check sixteen at a time).
#[inline(always)]
fn plain_byte(d: u8) -> bool {
    !(d.is_ascii_digit() || d.wrapping_sub(b'\t') < 5 || d == b' ' || d == b'+' || d == b'-')
}

/// Whether ASCII byte `d`, followed by `next`, ends a run of plain bytes:
/// it is not plain, and not one space before a plain byte.
#[inline(always)]
fn ends_run(d: u8, next: u8) -> bool {
    !(plain_byte(d) || d == b' ' && plain_byte(next))
}

/// [`normalise_chars`] over ASCII bytes.
fn normalise_ascii(b: &[u8], out: &mut Vec<u8>) {
    out.reserve(b.len());
    let start = out.len();
    let mut i = 0;
    let mut space = false;
    while let Some(&c) = b.get(i) {
        let class = CLASS[usize::from(c)];
        let signed = class == SIGN
            && b.get(i + 1).is_some_and(u8::is_ascii_digit)
            && (i == 0 || !b[i - 1].is_ascii_alphanumeric());
        if class == DIGIT || signed {
            i = figure_end(&|k| b.get(k).map(|&d| char::from(d)), i + 1);
            out.push(b'#');
            space = false;
        } else if class == SPACE {
            if !space && out.len() > start {
                out.push(b' ');
            }
            space = true;
            i += 1;
        } else {
            // A run copied as it is, lower-cased: up to the next byte that
            // may start a figure, or whitespace other than one space between
            // plain bytes (which stands for itself). Prose has long runs, so
            // sixteen bytes are looked at together while none ends it.
            let run = i;
            i += 1;
            while let Some(chunk) = b.get(i..i + 17) {
                let mut ends = false;
                for k in 0..16 {
                    ends |= ends_run(chunk[k], chunk[k + 1]);
                }
                if ends {
                    break;
                }
                i += 16;
            }
            while let Some(&d) = b.get(i) {
                if ends_run(d, b.get(i + 1).copied().unwrap_or(b' ')) {
                    break;
                }
                i += 1;
            }
            let at = out.len();
            out.extend_from_slice(&b[run..i]);
            out[at..].make_ascii_lowercase();
            space = false;
        }
    }
    if out.len() > start && out.last() == Some(&b' ') {
        out.pop();
    }
}

fn normalise_chars<T: Copy + Into<char>>(chars: &[T], out: &mut Vec<u8>) {
    let at = |i: usize| chars.get(i).map(|c| (*c).into());
    let push = |out: &mut Vec<u8>, c: char| {
        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
    };
    let start = out.len();
    let mut i = 0;
    let mut space = false;
    while let Some(c) = at(i) {
        let signed = (c == '-' || c == '+')
            && at(i + 1).is_some_and(|d| d.is_ascii_digit())
            && (i == 0 || !at(i - 1).is_some_and(char::is_alphanumeric));
        if c.is_ascii_digit() || signed {
            // One figure: digits joined by separators that sit between
            // digits (a separator may be followed by a sign).
            i = figure_end(&at, i + 1);
            out.push(b'#');
            space = false;
            continue;
        }
        if c.is_whitespace() {
            if !space && out.len() > start {
                out.push(b' ');
            }
            space = true;
        } else {
            c.to_lowercase().for_each(|l| push(out, l));
            space = false;
        }
        i += 1;
    }
    // Only the one collapsed space can end it (a lower-cased character is
    // never whitespace).
    if out.len() > start && out.last() == Some(&b' ') {
        out.pop();
    }
}

/// Where the figure whose first character is before `i` ends.
fn figure_end(at: &impl Fn(usize) -> Option<char>, mut i: usize) -> usize {
    loop {
        match at(i) {
            Some(d) if d.is_ascii_digit() => i += 1,
            Some(s) if matches!(s, '.' | ',' | ':' | '-' | '/' | 'T' | 'Z') => {
                let mut j = i + 1;
                while at(j) == Some(' ') && s == ',' {
                    j += 1;
                }
                if matches!(at(j), Some('-' | '+')) {
                    j += 1;
                }
                if at(j).is_some_and(|d| d.is_ascii_digit()) {
                    i = j;
                } else if s == 'Z' {
                    return i + 1;
                } else {
                    return i;
                }
            }
            _ => return i,
        }
    }
}

/// The near-duplicate key of an exchange: its messages' normalised text
/// and tool calls, in order.
pub fn exchange_key(msgs: &[Message]) -> u64 {
    let mut key = Vec::with_capacity(msgs.iter().map(|m| m.content.len() + 8).sum());
    for m in msgs {
        key.extend_from_slice(m.role.as_str().as_bytes());
        key.push(1);
        normalise_into(&m.content, &mut key);
        for c in &m.tool_calls {
            key.push(2);
            key.extend_from_slice(c.name.as_bytes());
            key.push(2);
            normalise_into(&c.arguments.to_string(), &mut key);
        }
        key.push(3);
    }
    fingerprint(&key)
}

/// The near-duplicate keys of one session's exchanges, each computed once,
/// when first asked for (selection, the other-split check and the written
/// line all ask).
#[derive(Debug, Default)]
pub struct ExchangeKeys(Vec<std::cell::OnceCell<u64>>);

impl ExchangeKeys {
    pub fn new(n: usize) -> ExchangeKeys {
        ExchangeKeys(vec![std::cell::OnceCell::new(); n])
    }

    /// The key of exchange `i`, whose messages are `msgs`.
    pub fn get(&self, i: usize, msgs: &[Message]) -> u64 {
        *self.0[i].get_or_init(|| exchange_key(msgs))
    }
}

/// The near-duplicate key of a written line (DPO pairs): every string in
/// it but the system prompt and the tool definitions, normalised.
pub fn line_key(line: &serde_json::Value) -> u64 {
    fn walk(v: &serde_json::Value, key: &mut Vec<u8>) {
        match v {
            serde_json::Value::String(s) => {
                normalise_into(s, key);
                key.push(1);
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, key)),
            serde_json::Value::Object(o) => {
                if o.get("role").and_then(|r| r.as_str()) == Some("system") {
                    return;
                }
                for (k, x) in o {
                    if k != "tools" && k != "system" && k != "meta" {
                        key.extend_from_slice(k.as_bytes());
                        key.push(2);
                        walk(x, key);
                    }
                }
            }
            other => {
                normalise_into(&other.to_string(), key);
                key.push(1);
            }
        }
    }
    let mut key = Vec::new();
    walk(line, &mut key);
    fingerprint(&key)
}

/// Writes what its closure writes: the compact hex forms go straight into
/// the state file's writer (`collect_str`), without a string of their own.
struct Hex<F>(F);

impl<F: Fn(&mut std::fmt::Formatter<'_>) -> std::fmt::Result> std::fmt::Display for Hex<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (self.0)(f)
    }
}

impl<F: Fn(&mut std::fmt::Formatter<'_>) -> std::fmt::Result> serde::Serialize for Hex<F> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Decodes a string field with `f` without copying it when the input can
/// lend it (a state file read whole).
fn with_str<'de, D, T>(d: D, f: impl FnOnce(&str) -> Result<T, String>) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Str<F>(F);
    impl<'de, T, F: FnOnce(&str) -> Result<T, String>> serde::de::Visitor<'de> for Str<F> {
        type Value = T;
        fn expecting(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            out.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
            (self.0)(v).map_err(E::custom)
        }
    }
    d.deserialize_str(Str(f))
}

/// Serde helpers for the compact forms of [`Memory`].
pub mod hex_prints {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&super::Hex(|f: &mut std::fmt::Formatter<'_>| {
            v.iter().try_for_each(|x| write!(f, "{x:016x}"))
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
        super::with_str(d, |s| {
            if s.len() % 16 != 0 || !s.is_ascii() {
                return Err("fingerprints: not 16 hex digits each".into());
            }
            (0..s.len() / 16)
                .map(|i| {
                    u64::from_str_radix(&s[i * 16..i * 16 + 16], 16).map_err(|e| e.to_string())
                })
                .collect()
        })
    }
}

pub mod hex_counts {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[(u64, u32)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&super::Hex(|f: &mut std::fmt::Formatter<'_>| encode(v, f)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(u64, u32)>, D::Error> {
        super::with_str(d, decode)
    }

    /// 16 hex digits of key and 8 of count each.
    pub(super) fn encode(v: &[(u64, u32)], f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        v.iter().try_for_each(|(k, n)| write!(f, "{k:016x}{n:08x}"))
    }

    pub(super) fn decode(s: &str) -> Result<Vec<(u64, u32)>, String> {
        if !s.len().is_multiple_of(24) || !s.is_ascii() {
            return Err("near-duplicate counts: not 24 hex digits each".into());
        }
        (0..s.len() / 24)
            .map(|i| {
                let e = &s[i * 24..i * 24 + 24];
                let hex = |x: &str| u64::from_str_radix(x, 16).map_err(|e| e.to_string());
                Ok((hex(&e[..16])?, hex(&e[16..])? as u32))
            })
            .collect()
    }
}

/// [`Memory::line_keys`] as one string a line: 16 hex digits of the
/// line's fingerprint, then each key as [`hex_counts`] writes it, with the
/// turn's time in whole seconds for a count ([`NO_TIME`] for none).
pub mod hex_line_keys {
    use serde::de::{SeqAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serializer};

    use super::LineKeyTable;

    pub fn serialize<S: Serializer>(v: &LineKeyTable, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq((0..v.len()).map(|i| {
            super::Hex(move |f: &mut std::fmt::Formatter<'_>| {
                let (print, keys, times) = v.line(i);
                write!(f, "{print:016x}")?;
                keys.iter()
                    .zip(times)
                    .try_for_each(|(k, n)| write!(f, "{k:016x}{n:08x}"))
            })
        }))
    }

    /// Decoded line by line as the strings arrive (no list of strings is
    /// held: a large state has a few hundred thousand).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LineKeyTable, D::Error> {
        struct Lines;
        impl<'de> Visitor<'de> for Lines {
            type Value = LineKeyTable;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of line key strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = LineKeyTable::new();
                while let Some(Line(print, keys)) = seq.next_element::<Line>()? {
                    out.push(print, keys);
                }
                Ok(out.sorted())
            }
        }
        struct Line(u64, Vec<(u64, u32)>);
        impl<'de> Deserialize<'de> for Line {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Line, D::Error> {
                super::with_str(d, |l| {
                    let print = l.get(..16).ok_or("line keys: too short")?;
                    let print = u64::from_str_radix(print, 16).map_err(|e| e.to_string())?;
                    Ok(Line(print, super::hex_counts::decode(&l[16..])?))
                })
            }
        }
        d.deserialize_seq(Lines)
    }
}

/// A turn without a time in [`Memory::line_keys`].
pub const NO_TIME: u32 = u32::MAX;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Role;

    #[test]
    fn figures_are_masked() {
        assert_eq!(
            normalise("Tick  at 2026-11-25T13:25:44Z: Archon at 12,-4, 7.5 (HP 40)"),
            "tick at #: archon at # (hp #)"
        );
        assert_eq!(normalise("v2 and x-1"), "v# and x-#");
        assert_eq!(normalise("  Hello\n\tWorld  "), "hello world");
    }

    #[test]
    fn ascii_text_normalises_as_its_characters_do() {
        for text in [
            "Tick  at 2026-11-25T13:25:44Z: Archon at 12,-4, 7.5 (HP 40)",
            "a-1 +2 x+3 -4\x0bend\r\n\t 5, 6,  -7 8/9 10:11 12Z",
            "  Hello\n\tWorld  ",
            "",
            "-",
            "9",
        ] {
            let mut chars = Vec::new();
            normalise_chars(&text.chars().collect::<Vec<char>>(), &mut chars);
            assert_eq!(normalise(text).as_bytes(), chars, "{text:?}");
        }
        assert_eq!(normalise("Ünïcode 12 ÀB"), "ünïcode # àb");
    }

    #[test]
    fn plain_bytes_are_the_class_tables() {
        for d in 0..=u8::MAX {
            assert_eq!(plain_byte(d), CLASS[usize::from(d)] == PLAIN, "{d}");
        }
    }

    #[test]
    fn the_byte_reading_gives_what_the_character_reading_gives() {
        // Random ASCII over the characters the rules look at, appended to a
        // buffer that already holds text (as a key does), 20,000 times;
        // every third text mostly words and single spaces, long enough for
        // runs read sixteen bytes at a time.
        let alphabet = b"aZ09-+.,:/TZ \t\n\x0b\x0c\r_x#";
        let prose = b"abcXYZ.,:/ bcd efg HIJ k l";
        let mut next = crate::hash::test_rng(0x2545_f491_4f6c_dd1d);
        for round in 0..20_000 {
            let len = (next() % if round % 3 == 2 { 120 } else { 24 }) as usize;
            let text: Vec<u8> = (0..len)
                .map(|_| {
                    let pick = next();
                    if round % 3 == 2 && !pick.is_multiple_of(16) {
                        prose[((pick >> 8) % prose.len() as u64) as usize]
                    } else {
                        alphabet[((pick >> 8) % alphabet.len() as u64) as usize]
                    }
                })
                .collect();
            let prefix: &[u8] = if round % 2 == 0 { b"" } else { b"user\x01a " };
            let (mut bytes, mut chars) = (prefix.to_vec(), prefix.to_vec());
            normalise_ascii(&text, &mut bytes);
            normalise_chars(&text, &mut chars);
            assert_eq!(bytes, chars, "{:?}", String::from_utf8_lossy(&text));
        }
    }

    #[test]
    fn ticks_share_a_key_and_words_do_not() {
        let ex = |u: &str, a: &str| {
            exchange_key(&[
                Message::new(Role::User, u),
                Message::new(Role::Assistant, a),
            ])
        };
        assert_eq!(
            ex("tick 17 at 1,2,3", "All quiet at 1,2,3."),
            ex("tick 18 at 4,-5,6", "All quiet at 4,-5,6.")
        );
        assert_ne!(ex("tick 17", "All quiet."), ex("tick 17", "An archon!"));
    }

    #[test]
    fn the_cap_holds_and_duplicates_go() {
        let empty = Memory::default();
        let mut d = Dedupe::new(&empty, 2);
        assert!(d.under_cap(7) && d.under_cap(7) && !d.under_cap(7));
        assert_eq!(d.near_dropped, 1);
        assert!(d.first_time(line_print(b"{}"), true) && !d.first_time(line_print(b"{}"), true));
        assert!(
            d.first_time(line_print(b"{}"), false),
            "kept when dedupe is off"
        );
        assert_eq!(d.exact_dropped, 1);
        let mut m = Memory::default();
        d.into_update().apply(&mut m);
        let mut again = Dedupe::new(&m, 2);
        assert!(!again.under_cap(7), "the count is the memory's");
        assert!(
            !again.first_time(line_print(b"{}"), true),
            "so is the fingerprint"
        );
    }

    /// Runs over a memory, each merged into it, give what one table of
    /// every count and split gives.
    #[test]
    fn runs_over_a_memory_merge_as_one_table() {
        let mut m = Memory::default();
        let mut model: std::collections::BTreeMap<u64, (u32, u32)> = Default::default();
        let mut prints = std::collections::BTreeSet::new();
        let mut rng = crate::hash::test_rng(0x9e37_79b9_7f4a_7c15_u64);
        let mut next = |n: u64| rng() % n;
        for run in 0..6 {
            let mut d = Dedupe::new(&m, 0);
            for _ in 0..200 {
                let key = next(300);
                assert!(d.reserve(key));
                d.written(key);
                let valid = next(2) == 0;
                d.wrote_in(key, valid);
                let e = model.entry(key).or_default();
                e.0 += 1;
                e.1 |= sides(valid).0;
                let line = format!("{run}-{}", next(500));
                assert_eq!(
                    d.first_time(line_print(line.as_bytes()), true),
                    prints.insert(line)
                );
            }
            d.into_update().apply(&mut m);
            let near: Vec<(u64, u32)> = model.iter().map(|(k, v)| (*k, v.0)).collect();
            let sides: Vec<(u64, u32)> = model.iter().map(|(k, v)| (*k, v.1)).collect();
            assert_eq!((&m.near, &m.sides), (&near, &sides), "after run {run}");
            let mut exact: Vec<u64> = prints.iter().map(|p| line_print(p.as_bytes())).collect();
            exact.sort_unstable();
            assert_eq!(m.exact, exact);
        }
    }

    #[test]
    fn the_line_key_table_keeps_lines_sorted_through_adds_and_removals() {
        let mut t = LineKeyTable::new();
        t.add(vec![
            (20, vec![(1, 5)]),
            (40, vec![]),
            (30, vec![(2, 6), (3, 7)]),
        ]);
        t.add(vec![
            (10, vec![(4, 8)]),
            (30, vec![(9, 9)]),
            (50, vec![(5, 1)]),
        ]);
        let all = |t: &LineKeyTable| -> Vec<(u64, Vec<(u64, u32)>)> {
            t.iter().map(|(p, k)| (p, k.collect())).collect()
        };
        assert_eq!(
            all(&t),
            vec![
                (10, vec![(4, 8)]),
                (20, vec![(1, 5)]),
                (30, vec![(2, 6), (3, 7)]),
                (40, vec![]),
                (50, vec![(5, 1)]),
            ],
            "a fingerprint held keeps its keys"
        );
        assert_eq!(t.remove(30), Some(vec![2, 3]));
        assert_eq!(t.remove(30), None);
        assert_eq!(t.get(50), Some((&[5u64][..], &[1u32][..])));
        assert_eq!(t.get(40), Some((&[][..], &[][..])));
        let text = serde_json::to_string(&Memory {
            line_keys: t.clone(),
            ..Memory::default()
        })
        .unwrap();
        let back: Memory = serde_json::from_str(&text).unwrap();
        assert_eq!(back.line_keys, t);
        // A file whose lines are out of order reads back sorted.
        let m: Memory = serde_json::from_str(
            r#"{"line_keys":["0000000000000002","000000000000000100000000000000030000000a"]}"#,
        )
        .unwrap();
        assert_eq!(all(&m.line_keys), vec![(1, vec![(3, 10)]), (2, vec![])]);
    }

    #[test]
    fn line_key_batches_merge_as_a_map_would_hold_them() {
        let mut next = crate::hash::test_rng(0x9e37_79b9_7f4a_7c15_u64);
        let mut table = LineKeyTable::new();
        let mut map: std::collections::BTreeMap<u64, Vec<(u64, u32)>> = Default::default();
        for _ in 0..40 {
            let batch: Vec<crate::curate::LineKeys> = (0..(next() % 30))
                .map(|_| {
                    let print = next() % 500;
                    let keys = (0..(next() % 4)).map(|_| (next(), next() as u32)).collect();
                    (print, keys)
                })
                .collect();
            let mut first = std::collections::BTreeMap::new();
            for (p, k) in &batch {
                first.entry(*p).or_insert_with(|| k.clone());
            }
            for (p, k) in first {
                map.entry(p).or_insert(k);
            }
            table.add(batch);
            let held: Vec<(u64, Vec<(u64, u32)>)> =
                table.iter().map(|(p, k)| (p, k.collect())).collect();
            let want: Vec<(u64, Vec<(u64, u32)>)> = map.clone().into_iter().collect();
            assert_eq!(held, want);
        }
    }

    #[test]
    fn memory_round_trips_compactly() {
        let m = Memory {
            exact: vec![1, u64::MAX],
            near: vec![(3, 4)],
            ..Memory::default()
        };
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(
            text,
            r#"{"exact":"0000000000000001ffffffffffffffff","near":"000000000000000300000004"}"#
        );
        let back: Memory = serde_json::from_str(&text).unwrap();
        assert_eq!(back, m);
        // Read streamed as well as whole (the state file is streamed).
        let streamed: Memory = serde_json::from_reader(text.as_bytes()).unwrap();
        assert_eq!(streamed, m);
        assert!(serde_json::from_str::<Memory>(r#"{"exact":"12"}"#).is_err());
        assert!(serde_json::from_str::<Memory>(r#"{"exact":12}"#).is_err());
    }

    #[test]
    fn a_forgotten_line_gives_its_near_keys_back() {
        let empty = Memory::default();
        let mut d = Dedupe::new(&empty, 3);
        for (print, key) in [(10, 7), (11, 7), (12, 8)] {
            assert!(d.reserve(key));
            d.written(key);
            d.wrote_in(key, false);
            d.wrote_line(print, vec![(key, Some(1_800_000_000.5)), (9, None)]);
        }
        let mut m = Memory::default();
        d.into_update().apply(&mut m);
        let text = serde_json::to_string(&m).unwrap();
        let back: Memory = serde_json::from_str(&text).unwrap();
        assert_eq!(back, m, "{text}");
        assert!(
            text.contains(r#""line_keys":["000000000000000a0000000000000007"#),
            "one string a line, its fingerprint first: {text}"
        );
        let streamed: Memory = serde_json::from_reader(text.as_bytes()).unwrap();
        assert_eq!(streamed, m);
        assert_eq!(line_times(&m, 12), Some(vec![Some(1_800_000_000.0), None]));
        forget_line(&mut m, 10);
        assert_eq!(m.near, vec![(7, 1), (8, 1)]);
        forget_line(&mut m, 12);
        assert_eq!(
            (m.near.clone(), m.sides.clone()),
            (vec![(7, 1)], vec![(7, 1)])
        );
        assert_eq!(line_times(&m, 12), None);
        assert!(serde_json::from_str::<Memory>(r#"{"line_keys":["12"]}"#).is_err());
    }
}
