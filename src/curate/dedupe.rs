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

/// Duplicate bookkeeping of one run, seeded from the state.
#[derive(Debug, Default)]
pub struct Dedupe {
    exact: HashSet<u64>,
    near: HashMap<u64, u32>,
    /// Exchanges of the session at hand let through the cap but not yet
    /// written: they count toward it only once written.
    pending: HashMap<u64, u32>,
    /// The splits each normalised exchange was written to (1 train, 2 valid).
    sides: HashMap<u64, u32>,
    /// The splits the session at hand let exchanges through for (not yet
    /// written; only what is written counts for later sessions).
    session_sides: HashMap<u64, u32>,
    /// The near keys (and turn times) of each line written in this run,
    /// by its print.
    lines: Vec<super::LineKeys>,
    cap: usize,
    pub exact_dropped: usize,
    pub near_dropped: usize,
}

impl Dedupe {
    pub fn new(memory: &Memory, cap: usize) -> Dedupe {
        Dedupe {
            exact: memory.exact.iter().copied().collect(),
            near: memory.near.iter().copied().collect(),
            pending: HashMap::new(),
            sides: memory.sides.iter().copied().collect(),
            session_sides: HashMap::new(),
            lines: Vec::new(),
            cap,
            exact_dropped: 0,
            near_dropped: 0,
        }
    }

    /// Whether a line with these bytes is new (and remembers it). With
    /// `enabled` false every line is new, but still remembered.
    pub fn first_time(&mut self, line: &[u8], enabled: bool) -> bool {
        let new = self.exact.insert(line_print(line));
        if !new && enabled {
            self.exact_dropped += 1;
            return false;
        }
        true
    }

    /// Whether one more exchange with this normalised key fits under the
    /// cap (and counts it when it does).
    pub fn under_cap(&mut self, key: u64) -> bool {
        let n = self.near.entry(key).or_default();
        if self.cap > 0 && *n as usize >= self.cap {
            self.near_dropped += 1;
            return false;
        }
        *n = n.saturating_add(1);
        true
    }

    /// Whether one more exchange with this key fits under the cap, counting
    /// those written and those of this session let through so far (it is
    /// counted as written by [`Dedupe::written`]).
    pub fn reserve(&mut self, key: u64) -> bool {
        let written = self.near.get(&key).copied().unwrap_or(0);
        let pending = self.pending.entry(key).or_default();
        if self.cap > 0 && (written + *pending) as usize >= self.cap {
            self.near_dropped += 1;
            return false;
        }
        *pending += 1;
        true
    }

    /// An exchange let through by [`Dedupe::reserve`] was written.
    pub fn written(&mut self, key: u64) {
        if let Some(p) = self.pending.get_mut(&key) {
            *p = p.saturating_sub(1);
        }
        let n = self.near.entry(key).or_default();
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
        let written = self.sides.get(&key).copied().unwrap_or(0);
        let here = self.session_sides.entry(key).or_default();
        if (written | *here) & other != 0 {
            return true;
        }
        *here |= mine;
        false
    }

    /// The exchange `key` was written to the split `valid` says.
    pub fn wrote_in(&mut self, key: u64, valid: bool) {
        *self.sides.entry(key).or_default() |= sides(valid).0;
    }

    /// Puts this run's fingerprints into the state's memory.
    pub fn remember(&self, memory: &mut Memory) {
        let mut exact: Vec<u64> = self.exact.iter().copied().collect();
        exact.sort_unstable();
        memory.exact = exact;
        let mut near: Vec<(u64, u32)> = self.near.iter().map(|(k, v)| (*k, *v)).collect();
        near.sort_unstable();
        memory.near = near;
        let mut sides: Vec<(u64, u32)> = self.sides.iter().map(|(k, v)| (*k, *v)).collect();
        sides.sort_unstable();
        memory.sides = sides;
        memory.line_keys.extend(self.lines.iter().cloned());
        memory.line_keys.sort_unstable_by_key(|l| l.0);
        memory.line_keys.dedup_by_key(|l| l.0);
    }
}

/// The times of the turns a line with the fingerprint `print` trained
/// on (whole seconds), when the state recorded them.
pub fn line_times(memory: &Memory, print: u64) -> Option<Vec<Option<f64>>> {
    let i = memory
        .line_keys
        .binary_search_by_key(&print, |l| l.0)
        .ok()?;
    let time = |secs: u32| (secs != NO_TIME).then_some(f64::from(secs));
    Some(memory.line_keys[i].1.iter().map(|k| time(k.1)).collect())
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
pub fn forget_line(memory: &mut Memory, print: u64) {
    if let Ok(i) = memory.exact.binary_search(&print) {
        memory.exact.remove(i);
    }
    let Ok(i) = memory.line_keys.binary_search_by_key(&print, |l| l.0) else {
        return;
    };
    for (key, _) in memory.line_keys.remove(i).1 {
        let Ok(k) = memory.near.binary_search_by_key(&key, |n| n.0) else {
            continue;
        };
        memory.near[k].1 = memory.near[k].1.saturating_sub(1);
        if memory.near[k].1 == 0 {
            memory.near.remove(k);
            if let Ok(s) = memory.sides.binary_search_by_key(&key, |n| n.0) {
                memory.sides.remove(s);
            }
        }
    }
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
    let mut out = String::with_capacity(text.len());
    normalise_into(text, &mut out);
    out
}

/// [`normalise`], appended to `out`.
fn normalise_into(text: &str, out: &mut String) {
    let start = out.len();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut space = false;
    while i < chars.len() {
        let c = chars[i];
        let signed = (c == '-' || c == '+')
            && chars.get(i + 1).is_some_and(char::is_ascii_digit)
            && (i == 0 || !chars[i - 1].is_alphanumeric());
        if c.is_ascii_digit() || signed {
            // One figure: digits joined by separators that sit between
            // digits (a separator may be followed by a sign).
            i = figure_end(&chars, i + 1);
            out.push('#');
            space = false;
            continue;
        }
        if c.is_whitespace() {
            if !space && out.len() > start {
                out.push(' ');
            }
            space = true;
        } else {
            if c.is_ascii() {
                out.push(c.to_ascii_lowercase());
            } else {
                out.extend(c.to_lowercase());
            }
            space = false;
        }
        i += 1;
    }
    let trimmed = out.trim_end().len().max(start);
    out.truncate(trimmed);
}

/// Where the figure whose first character is before `i` ends.
fn figure_end(chars: &[char], mut i: usize) -> usize {
    loop {
        match chars.get(i) {
            Some(d) if d.is_ascii_digit() => i += 1,
            Some(s) if matches!(s, '.' | ',' | ':' | '-' | '/' | 'T' | 'Z') => {
                let mut j = i + 1;
                while chars.get(j) == Some(&' ') && *s == ',' {
                    j += 1;
                }
                if matches!(chars.get(j), Some('-' | '+')) {
                    j += 1;
                }
                if chars.get(j).is_some_and(char::is_ascii_digit) {
                    i = j;
                } else if *s == 'Z' {
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
    let mut key = String::new();
    for m in msgs {
        key.push_str(m.role.as_str());
        key.push('\u{1}');
        normalise_into(&m.content, &mut key);
        for c in &m.tool_calls {
            key.push('\u{2}');
            key.push_str(&c.name);
            key.push('\u{2}');
            normalise_into(&c.arguments.to_string(), &mut key);
        }
        key.push('\u{3}');
    }
    fingerprint(key.as_bytes())
}

/// The near-duplicate key of a written line (DPO pairs): every string in
/// it but the system prompt and the tool definitions, normalised.
pub fn line_key(line: &serde_json::Value) -> u64 {
    fn walk(v: &serde_json::Value, key: &mut String) {
        match v {
            serde_json::Value::String(s) => {
                normalise_into(s, key);
                key.push('\u{1}');
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, key)),
            serde_json::Value::Object(o) => {
                if o.get("role").and_then(|r| r.as_str()) == Some("system") {
                    return;
                }
                for (k, x) in o {
                    if k != "tools" && k != "system" && k != "meta" {
                        key.push_str(k);
                        key.push('\u{2}');
                        walk(x, key);
                    }
                }
            }
            other => {
                normalise_into(&other.to_string(), key);
                key.push('\u{1}');
            }
        }
    }
    let mut key = String::new();
    walk(line, &mut key);
    fingerprint(key.as_bytes())
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

    use crate::curate::LineKeys;

    pub fn serialize<S: Serializer>(v: &[LineKeys], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|(print, keys)| {
            super::Hex(move |f: &mut std::fmt::Formatter<'_>| {
                write!(f, "{print:016x}")?;
                super::hex_counts::encode(keys, f)
            })
        }))
    }

    /// Decoded line by line as the strings arrive (no list of strings is
    /// held: a large state has a few hundred thousand).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<LineKeys>, D::Error> {
        struct Lines;
        impl<'de> Visitor<'de> for Lines {
            type Value = Vec<LineKeys>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of line key strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(keys) = seq.next_element::<Line>()? {
                    out.push(keys.0);
                }
                Ok(out)
            }
        }
        struct Line(LineKeys);
        impl<'de> Deserialize<'de> for Line {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Line, D::Error> {
                super::with_str(d, |l| {
                    let print = l.get(..16).ok_or("line keys: too short")?;
                    let print = u64::from_str_radix(print, 16).map_err(|e| e.to_string())?;
                    Ok(Line((print, super::hex_counts::decode(&l[16..])?)))
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
        let mut d = Dedupe::new(&Memory::default(), 2);
        assert!(d.under_cap(7) && d.under_cap(7) && !d.under_cap(7));
        assert_eq!(d.near_dropped, 1);
        assert!(d.first_time(b"{}", true) && !d.first_time(b"{}", true));
        assert!(d.first_time(b"{}", false), "kept when dedupe is off");
        assert_eq!(d.exact_dropped, 1);
        let mut m = Memory::default();
        d.remember(&mut m);
        let again = Dedupe::new(&m, 2);
        assert_eq!(again.near.get(&7), Some(&2));
        assert!(again.exact.contains(&line_print(b"{}")));
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
        let mut d = Dedupe::new(&Memory::default(), 3);
        for (print, key) in [(10, 7), (11, 7), (12, 8)] {
            assert!(d.reserve(key));
            d.written(key);
            d.wrote_in(key, false);
            d.wrote_line(print, vec![(key, Some(1_800_000_000.5)), (9, None)]);
        }
        let mut m = Memory::default();
        d.remember(&mut m);
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
