//! From stored rows to the one true conversation of a session.
//!
//! Phase 1 (structure) undoes what the harness did to the stored history:
//! `/undo`-ed rows are set aside, context-compaction summaries are dropped,
//! and the copies that compaction inserts (the protected head before the
//! summary, the protected tail after it) are recognised against the turns
//! already seen, so every original turn appears once, in order, across a
//! rotated lineage too (a rotation parent ends with `end_reason =
//! 'compression'` and its child starts with copies of the head, a summary
//! and copies of the tail).
//!
//! Phase 2 (meaning) keeps one branch where a user took something back or
//! asked again, and records the other branch as a preference signal:
//! `rewind` (undone reply vs the reply to the same text re-sent),
//! `regenerate` (earlier vs later answer to a repeated prompt) and
//! `tool-retry` (a failed call vs the call that then worked). It also merges
//! orphan user turns, drops background-review harness turns and names every
//! tool result after the call it answers (0.13 stored no name; 0.22 names
//! a result behind the tool-search bridge after the inner tool, while the
//! model called `tool_call`).
//!
//! A store that records turn identity (schema v31, Hermes 0.22: every row
//! has a `message_uid`) is first reduced by identity ([`by_identity`]):
//! rows that share a uid are one turn, kept at its first row (compaction
//! clones repeat the uid, content and timestamp of their original); a
//! summary row that carries a turn's uid gives that turn back without the
//! summary text; a rewound original (`active=0, compacted=0`) whose clone
//! survives is not an undo; a composite row and the rows it absorbed are one
//! turn, with the composite's text. Only a turn none of whose rows survives
//! is undone.

use std::collections::{HashMap, HashSet};

use crate::model::{Message, Role, RowState, Session};

/// The kinds of preference signal found in the data: Hermes stores no
/// ratings, so every DPO pair comes from one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    Rewind,
    Regenerate,
    ToolRetry,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Rewind, Signal::Regenerate, Signal::ToolRetry];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Rewind => "rewind",
            Signal::Regenerate => "regenerate",
            Signal::ToolRetry => "tool-retry",
        }
    }
}

/// A branch that was not kept, next to the one that was.
#[derive(Debug, Clone)]
pub struct Alternative {
    pub signal: Signal,
    /// `messages[..prompt_end]` is the shared context.
    pub prompt_end: usize,
    /// `messages[prompt_end..chosen_end]` is the kept branch.
    pub chosen_end: usize,
    /// The branch that was not kept.
    pub rejected: Vec<Message>,
}

/// What was dropped while rebuilding, for the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebuildStats {
    pub summaries: usize,
    pub compaction_copies: usize,
    pub undone_rows: usize,
    pub harness_rows: usize,
    pub merged_user_turns: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Rebuilt {
    pub messages: Vec<Message>,
    pub alternatives: Vec<Alternative>,
    pub stats: RebuildStats,
    /// The rows left out as undone (a later run retracts an exported line
    /// that trained on one of them).
    pub undone: Vec<Message>,
}

/// Opening of every compaction summary Hermes has written.
const SUMMARY_PREFIXES: [&str; 2] = ["[CONTEXT COMPACTION", "[CONTEXT SUMMARY]:"];
/// A summary merged into the first tail message keeps that message's text
/// between these two markers.
const MERGED_HEADER: &str = "[PRIOR CONTEXT — for reference only; not a new message]";
const MERGED_DELIMITER: &str = "[END OF PRIOR CONTEXT — COMPACTION SUMMARY BELOW]";
/// Background-review prompts that older builds wrote into real sessions.
const HARNESS_PREFIXES: [&str; 2] = [
    "Review the conversation above and update the skill library",
    "Review the conversation above and consider saving to memory",
];
/// Longest run of copies a compaction inserts that we look for.
const MAX_COPY_RUN: usize = 256;
/// How far back tail copies are looked for.
const COPY_SEARCH_WINDOW: usize = 4096;

pub fn rebuild(session: &Session) -> Rebuilt {
    let mut stats = RebuildStats::default();
    let (turns, undone) = stored(session, &mut stats);
    let undone_rows = undone.iter().flat_map(|(_, b)| b.iter().cloned()).collect();
    let (messages, alternatives) = meaning(turns, undone, &mut stats);
    Rebuilt {
        messages,
        alternatives,
        stats,
        undone: undone_rows,
    }
}

/// Phase 1 with the identity reduction before it: the stored turns once
/// each, in order, and the undone blocks.
fn stored(
    session: &Session,
    stats: &mut RebuildStats,
) -> (Vec<Message>, Vec<(usize, Vec<Message>)>) {
    let by_uid = by_identity(&session.messages, stats);
    let rows = by_uid.as_deref().unwrap_or(&session.messages);
    structure(rows, stats)
}

/// Every turn the session stores, once, in order, before phase 2: undone
/// rows set aside, summaries dropped, compaction clones and copies (a
/// rotated child's head and tail, an in-place compaction's archived
/// originals) counted once. Two identical user turns stay two turns, as
/// phase 2 would merge them as a regeneration.
pub fn stored_turns(session: &Session) -> Vec<Message> {
    stored(session, &mut RebuildStats::default()).0
}

/// Ends the summary part of a summary row that carries a turn (0.22); the
/// turn's own text follows it.
const SUMMARY_END: &str =
    "--- END OF CONTEXT SUMMARY — respond to the message below, not the summary above ---";

/// The rows of a store that records turn identity, one per turn (see the
/// module header); `None` when no row has a uid (older stores).
fn by_identity(rows: &[Message], stats: &mut RebuildStats) -> Option<Vec<Message>> {
    fn uid(m: &Message) -> Option<&str> {
        m.uid.as_deref()
    }
    if !rows.iter().any(|m| m.uid.is_some()) {
        return None;
    }
    let survives: HashSet<&str> = rows
        .iter()
        .filter(|m| m.state != RowState::Undone)
        .filter_map(uid)
        .collect();
    let turn_uids: HashSet<&str> = rows
        .iter()
        .filter(|m| !is_summary(m))
        .filter_map(uid)
        .collect();
    let absorbed: HashSet<&str> = rows
        .iter()
        .flat_map(|m| m.absorbed.iter().map(String::as_str))
        .collect();
    // The newest composite of each turn holds the merged text.
    let mut composite: HashMap<&str, &str> = HashMap::new();
    for m in rows
        .iter()
        .filter(|m| !m.absorbed.is_empty() && !is_summary(m))
    {
        if let Some(u) = uid(m) {
            composite.insert(u, &m.content);
        }
    }
    let mut seen: HashSet<&str> = HashSet::new();
    let mut summaries: HashSet<&str> = HashSet::new();
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(u) = uid(row) else {
            out.push(row.clone());
            continue;
        };
        if absorbed.contains(u) && !composite.contains_key(u) {
            stats.merged_user_turns += usize::from(seen.insert(u));
            continue;
        }
        if is_summary(row) {
            if summaries.insert(u) {
                stats.summaries += 1;
            }
            // A turn it carries whose own rows are gone comes back from it.
            match carried_turn(row) {
                Some(text) if !turn_uids.contains(u) && seen.insert(u) => out.push(Message {
                    content: text,
                    summary_flag: false,
                    state: RowState::Live,
                    ..row.clone()
                }),
                _ => {}
            }
            continue;
        }
        if !seen.insert(u) {
            stats.compaction_copies += 1;
            continue;
        }
        let mut m = row.clone();
        if m.state == RowState::Undone && survives.contains(u) {
            m.state = RowState::Live; // rewound, but its clone lives on
        }
        if let Some(text) = composite.get(u) {
            m.content = (*text).to_string();
        }
        out.push(m);
    }
    Some(out)
}

/// The turn a summary row carries, if any: the message after the summary
/// (0.22), or the text a merged summary keeps.
fn carried_turn(m: &Message) -> Option<String> {
    let text = match summary_kind(m) {
        Summary::Merged(text) => text,
        Summary::Standalone => m.content.split_once(SUMMARY_END)?.1.trim().to_string(),
        Summary::No => return None,
    };
    (!text.is_empty()).then_some(text)
}

/// How a row relates to compaction.
enum Summary {
    No,
    /// A standalone summary row.
    Standalone,
    /// A summary merged into a tail message; the message's own text.
    Merged(String),
}

fn summary_kind(m: &Message) -> Summary {
    let text = m.content.trim_start();
    if let Some(rest) = text.strip_prefix(MERGED_HEADER)
        && let Some((prior, _)) = rest.split_once(MERGED_DELIMITER)
    {
        return Summary::Merged(prior.trim().to_string());
    }
    if m.summary_flag || SUMMARY_PREFIXES.iter().any(|p| text.starts_with(p)) {
        Summary::Standalone
    } else {
        Summary::No
    }
}

/// True for a compaction summary row (standalone or merged into a turn).
pub fn is_summary(m: &Message) -> bool {
    !matches!(summary_kind(m), Summary::No)
}

/// True when the stored rows start with a compaction's head copy and
/// summary: the original turns before them are not in this store (0.13's
/// gateway rewrites the session on compaction; only the session snapshot
/// keeps them).
pub fn starts_compacted(rows: &[Message]) -> bool {
    // Hermes protects only the first few turns; a store that kept the
    // originals has many rows (or archived ones) before the first summary.
    const HEAD_ROWS: usize = 4;
    rows.iter()
        .filter(|m| m.state != RowState::Undone)
        .take(HEAD_ROWS + 1)
        .take_while(|m| m.state == RowState::Live)
        .enumerate()
        .any(|(i, m)| i > 0 && is_summary(m))
}

/// Phase 1. Returns the original turns in order, and the undone blocks with
/// the position (in those turns) where each was taken back.
fn structure(
    rows: &[Message],
    stats: &mut RebuildStats,
) -> (Vec<Message>, Vec<(usize, Vec<Message>)>) {
    // (message, index of the row it came from)
    let mut out: Vec<(Message, usize)> = Vec::with_capacity(rows.len());
    let mut undone: Vec<(usize, Vec<Message>)> = Vec::new();
    let mut skip = 0usize;
    for (i, row) in rows.iter().enumerate() {
        if row.state == RowState::Undone {
            stats.undone_rows += 1;
            match undone.last_mut() {
                Some((at, block)) if *at == out.len() && rows[i - 1].state == RowState::Undone => {
                    block.push(row.clone())
                }
                _ => undone.push((out.len(), vec![row.clone()])),
            }
            continue;
        }
        if skip > 0 {
            skip -= 1;
            stats.compaction_copies += 1;
            continue;
        }
        let merged = match summary_kind(row) {
            Summary::No => {
                out.push((row.clone(), i));
                continue;
            }
            Summary::Standalone => None,
            Summary::Merged(text) => Some(Message {
                content: text,
                summary_flag: false,
                ..row.clone()
            }),
        };
        stats.summaries += 1;
        // Head copies: the rows just before the summary repeat the first turns.
        let k = head_copies(&out, i);
        out.truncate(out.len() - k);
        stats.compaction_copies += k;
        // Tail copies: the rows after it repeat the last turns seen.
        let following = rows[i + 1..]
            .iter()
            .filter(|r| r.state != RowState::Undone)
            .take(MAX_COPY_RUN);
        let candidates: Vec<&Message> = merged.iter().chain(following).collect();
        let m = tail_copies(&out, &candidates);
        if m == 0 {
            if let Some(msg) = merged {
                out.push((msg, i));
            }
        } else {
            // The merged row itself is the first copy.
            let from_rows = if merged.is_some() { m - 1 } else { m };
            stats.compaction_copies += usize::from(merged.is_some());
            skip = from_rows;
        }
    }
    (out.into_iter().map(|(m, _)| m).collect(), undone)
}

/// How many of the last entries of `out` are copies of its first entries,
/// inserted as one block right before the summary at row `at`. When the
/// session itself starts with that block (a child or a snapshot whose
/// ancestor is elsewhere), the whole block is the head copy.
fn head_copies(out: &[(Message, usize)], at: usize) -> usize {
    let max = (out.len() / 2).min(MAX_COPY_RUN);
    let matched = (1..=max).rev().find(|&k| {
        let tail = &out[out.len() - k..];
        tail.iter()
            .enumerate()
            .all(|(j, (m, row))| *row + k == at + j && m.same_turn(&out[j].0))
    });
    match matched {
        Some(k) => k,
        None if out.len() <= MAX_COPY_RUN
            && out
                .iter()
                .enumerate()
                .all(|(j, (_, row))| *row + out.len() == at + j) =>
        {
            out.len()
        }
        None => 0,
    }
}

/// How many of `candidates` repeat, in order, a run of turns already in
/// `out`: the tail copies after a summary. They repeat the last turns before
/// the compaction, which are the end of `out`, or (when Hermes compacts the
/// same parent again into a sibling session) an earlier run. A run of one
/// turn only counts when it is the very end of `out`, so a new turn that
/// happens to repeat an old one is not taken for a copy.
fn tail_copies(out: &[(Message, usize)], candidates: &[&Message]) -> usize {
    let Some(first) = candidates.first() else {
        return 0;
    };
    let mut best = 0;
    for k in out.len().saturating_sub(COPY_SEARCH_WINDOW)..out.len() {
        if !out[k].0.same_turn(first) {
            continue;
        }
        let m = out[k..]
            .iter()
            .zip(candidates)
            .take_while(|((a, _), b)| a.same_turn(b))
            .count();
        if (m >= 2 || k + m == out.len()) && m >= best {
            best = m;
        }
    }
    best
}

fn is_harness(m: &Message) -> bool {
    m.role == Role::User && HARNESS_PREFIXES.iter().any(|p| m.content.starts_with(p))
}

/// Phase 2.
fn meaning(
    turns: Vec<Message>,
    undone: Vec<(usize, Vec<Message>)>,
    stats: &mut RebuildStats,
) -> (Vec<Message>, Vec<Alternative>) {
    let mut res: Vec<Message> = Vec::with_capacity(turns.len());
    let mut alts: Vec<Alternative> = Vec::new();
    let mut undone = undone.into_iter().peekable();
    // The first exchange of the last undone block: (user text, replies).
    let mut pending_rewind: Option<(String, Vec<Message>)> = None;
    let mut in_harness = false;
    let mut exchange_start: Option<usize> = None;

    for (pos, m) in turns.into_iter().enumerate() {
        while let Some((_, block)) = undone.next_if(|(at, _)| *at <= pos) {
            pending_rewind = first_exchange(block);
        }
        if m.role == Role::User {
            if let Some(start) = exchange_start {
                close_exchange(&mut res, start, &mut alts);
            }
            if is_harness(&m) {
                in_harness = true;
                stats.harness_rows += 1;
                continue;
            }
            in_harness = false;
            let rewound = pending_rewind
                .take()
                .filter(|(text, _)| text.trim() == m.content.trim());
            exchange_start = Some(user_turn(&mut res, &mut alts, m, rewound, stats));
            continue;
        }
        if in_harness {
            stats.harness_rows += 1;
            continue;
        }
        let mut m = m;
        if m.role == Role::Tool {
            // A result is named after the call it answers, as the model saw
            // it: behind 0.22's tool-search bridge the call is `tool_call`
            // while Hermes names the row after the inner tool.
            if let Some(name) = tool_name_for(&res, m.tool_call_id.as_deref()) {
                m.tool_name = Some(name);
            }
        }
        res.push(m);
    }
    if let Some(start) = exchange_start {
        close_exchange(&mut res, start, &mut alts);
    }
    finish_alternatives(&res, &mut alts);
    (res, alts)
}

/// A user turn in phase 2: a prompt repeated right after its own answer
/// is a regeneration; one that follows an unanswered turn is merged into it
/// (or dropped as a re-send); one that repeats the first prompt of an undone
/// block makes a rewind pair. Returns where its exchange starts.
fn user_turn(
    res: &mut Vec<Message>,
    alts: &mut Vec<Alternative>,
    m: Message,
    rewound: Option<(String, Vec<Message>)>,
    stats: &mut RebuildStats,
) -> usize {
    // A prompt repeated right after its own answer: a regeneration.
    let last_user = res.iter().rposition(|x| x.role == Role::User);
    let regenerated = last_user.filter(|&u| {
        res[u].content.trim() == m.content.trim()
            && res[u + 1..].iter().any(|x| x.role == Role::Assistant)
    });
    if let Some(u) = regenerated {
        let rejected = res.split_off(u + 1);
        res.truncate(u);
        alts.push(Alternative {
            signal: Signal::Regenerate,
            prompt_end: u + 1,
            chosen_end: 0,
            rejected,
        });
    }
    if let Some(prev) = res.last_mut().filter(|p| p.role == Role::User) {
        // An orphan user turn (no reply): merge, or drop a re-send.
        stats.merged_user_turns += 1;
        if prev.content.trim() != m.content.trim() {
            prev.content = format!("{}\n\n{}", prev.content, m.content);
        }
    } else {
        res.push(m);
    }
    let start = res.len() - 1;
    if let Some((_, rejected)) = rewound {
        alts.push(Alternative {
            signal: Signal::Rewind,
            prompt_end: res.len(),
            chosen_end: 0,
            rejected,
        });
    }
    start
}

/// The user text and replies of the first exchange of an undone block.
fn first_exchange(block: Vec<Message>) -> Option<(String, Vec<Message>)> {
    let mut iter = block.into_iter();
    let first = iter.next()?;
    if first.role != Role::User {
        return None;
    }
    let replies: Vec<Message> = iter.take_while(|m| m.role != Role::User).collect();
    replies
        .iter()
        .any(Message::is_final_answer)
        .then_some((first.content, replies))
}

fn tool_name_for(res: &[Message], call_id: Option<&str>) -> Option<String> {
    let call_id = call_id?;
    res.iter().rev().find_map(|m| {
        m.tool_calls
            .iter()
            .find(|c| c.id == call_id)
            .map(|c| c.name.clone())
    })
}

/// True when a tool result reports a failure: an unknown tool, an
/// `Error:` text, a JSON result with an `error`, or a denied effect.
pub fn is_error_result(m: &Message) -> bool {
    if m.disposition.as_deref() == Some("denied") {
        return true;
    }
    let text = m.content.trim_start();
    if (text.starts_with("Tool '") && text.contains("' does not exist"))
        || text.starts_with("Error:")
    {
        return true;
    }
    if text.starts_with('{')
        && let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text)
    {
        let failed = match map.get("error") {
            None | Some(serde_json::Value::Null) | Some(serde_json::Value::Bool(false)) => false,
            Some(serde_json::Value::String(s)) => !s.is_empty(),
            Some(_) => true,
        };
        return failed || map.get("success") == Some(&serde_json::Value::Bool(false));
    }
    false
}

/// True when a tool result says the tool does not exist.
fn is_unknown_tool(m: &Message) -> bool {
    let text = m.content.trim_start();
    text.starts_with("Tool '") && text.contains("' does not exist")
}

/// Whether the call turn `retry` retries the failed call turn `failed`
/// (with its `results`) at the same step: every failed call was either to
/// a tool that does not exist, or is made again to the same tool with
/// other arguments. A failure followed by a different, existing tool is
/// not the same step (the model changed its plan), so no preference can
/// be read from it.
fn retries_same_step(failed: &Message, results: &[Message], retry: &Message) -> bool {
    failed.tool_calls.iter().all(|c| {
        let unknown = results
            .iter()
            .filter(|r| r.tool_call_id.as_deref() == Some(c.id.as_str()))
            .any(is_unknown_tool);
        unknown
            || retry
                .tool_calls
                .iter()
                .any(|r| r.name == c.name && r.arguments != c.arguments)
    })
}

/// Removes, from the exchange `res[start..]`, tool-call turns whose every
/// result was an error when a later call in the same exchange retried the
/// same step and worked, and records each as a `tool-retry` alternative.
/// Failures that no retry of the same step followed stay as they happened.
fn close_exchange(res: &mut Vec<Message>, start: usize, alts: &mut Vec<Alternative>) {
    if !res[start..].iter().any(|m| m.role == Role::Tool) {
        return;
    }
    let tail = res.split_off(start);
    // Failed call groups waiting for a retry, as (start, end) in `tail`.
    let mut held: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < tail.len() {
        let m = &tail[i];
        let mut end = i + 1;
        if m.role == Role::Assistant {
            while end < tail.len()
                && tail[end].role == Role::Tool
                && m.tool_calls
                    .iter()
                    .any(|c| Some(c.id.as_str()) == tail[end].tool_call_id.as_deref())
            {
                end += 1;
            }
        }
        let group = &tail[i..end];
        let results = &group[1..];
        let is_call = !results.is_empty();
        if is_call
            && m.content.trim().is_empty()
            && results.len() == m.tool_calls.len()
            && results.iter().all(is_error_result)
        {
            held.push((i, end));
        } else if is_call
            && !held.is_empty()
            && held
                .iter()
                .all(|&(a, b)| retries_same_step(&tail[a], &tail[a + 1..b], m))
        {
            // This call retried the failed ones and worked: they become signals.
            for (a, _) in held.drain(..) {
                alts.push(Alternative {
                    signal: Signal::ToolRetry,
                    prompt_end: res.len(),
                    chosen_end: res.len() + 1,
                    rejected: vec![tail[a].clone()],
                });
            }
            res.extend_from_slice(group);
        } else {
            // No retry of the same step followed: keep what happened.
            for (a, b) in held.drain(..) {
                res.extend_from_slice(&tail[a..b]);
            }
            res.extend_from_slice(group);
        }
        i = end;
    }
    for (a, b) in held {
        res.extend_from_slice(&tail[a..b]);
    }
}

/// Drops the second copy of the transcript that Hermes flushes into a
/// session right before rotating it for compression: the rows from the
/// middle on repeat all rows before them (at most the current user turn
/// follows). Undone rows are not part of the flushed transcript.
pub fn drop_rotation_reflush(rows: &mut Vec<Message>) {
    let live: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i].state != RowState::Undone)
        .collect();
    let n = live.len();
    for j in [n / 2, n.saturating_sub(1) / 2] {
        if j == 0 || 2 * j > n {
            continue;
        }
        if (0..j).all(|k| rows[live[j + k]].same_turn(&rows[live[k]])) {
            let drop: Vec<usize> = live[j..2 * j].to_vec();
            let mut idx = 0;
            rows.retain(|_| {
                let keep = !drop.contains(&idx);
                idx += 1;
                keep
            });
            return;
        }
    }
}

/// Sets where each kept branch ends and drops alternatives that no longer
/// point at a user turn followed by a reply.
fn finish_alternatives(res: &[Message], alts: &mut Vec<Alternative>) {
    for a in alts.iter_mut() {
        if a.signal != Signal::ToolRetry {
            a.chosen_end = (a.prompt_end..res.len())
                .find(|&k| res[k].role == Role::User)
                .unwrap_or(res.len());
        }
    }
    alts.retain(|a| {
        a.prompt_end > 0
            && a.chosen_end > a.prompt_end
            && a.chosen_end <= res.len()
            && !a.rejected.is_empty()
            && match a.signal {
                Signal::ToolRetry => res[a.prompt_end].role == Role::Assistant,
                _ => res[a.prompt_end - 1].role == Role::User,
            }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ToolCall;

    fn row(role: Role, text: &str, state: RowState) -> Message {
        Message {
            state,
            ..Message::new(role, text)
        }
    }
    fn live(role: Role, text: &str) -> Message {
        row(role, text, RowState::Live)
    }
    fn call(id: &str, name: &str) -> Message {
        Message {
            tool_calls: vec![ToolCall {
                id: id.into(),
                name: name.into(),
                arguments: serde_json::json!({}),
            }],
            ..Message::new(Role::Assistant, "")
        }
    }
    fn result(id: &str, text: &str) -> Message {
        Message {
            tool_call_id: Some(id.into()),
            ..Message::new(Role::Tool, text)
        }
    }
    /// Live exchanges `T{t}` → `A{t}`.
    fn live_turns(ts: std::ops::RangeInclusive<u32>) -> Vec<Message> {
        ts.flat_map(|t| {
            [
                live(Role::User, &format!("T{t}")),
                live(Role::Assistant, &format!("A{t}")),
            ]
        })
        .collect()
    }

    /// What a compaction of T1..T4 writes first: the head copy, the
    /// summary, and the tail copies of T3 and T4.
    fn reflush() -> [Message; 6] {
        [
            live(Role::User, "T1"),
            live(Role::Assistant, SUMMARY),
            live(Role::User, "T3"),
            live(Role::Assistant, "A3"),
            live(Role::User, "T4"),
            live(Role::Assistant, "A4"),
        ]
    }

    fn texts(msgs: &[Message]) -> Vec<String> {
        msgs.iter().map(|m| m.content.clone()).collect()
    }
    fn session(messages: Vec<Message>) -> Session {
        Session {
            messages,
            ..Session::default()
        }
    }
    const SUMMARY: &str = "[CONTEXT COMPACTION — REFERENCE ONLY] Earlier turns were compacted.";

    #[test]
    fn in_place_compaction_gives_every_original_turn_once() {
        use Role::*;
        use RowState::*;
        let mut rows = Vec::new();
        for t in 1..=4 {
            rows.push(row(User, &format!("T{t}"), Compacted));
            rows.push(row(Assistant, &format!("A{t}"), Compacted));
        }
        // head copy, summary, tail copies, current turn
        rows.push(live(User, "T1"));
        rows.push(live(Assistant, SUMMARY));
        for t in 3..=4 {
            rows.push(live(User, &format!("T{t}")));
            rows.push(live(Assistant, &format!("A{t}")));
        }
        rows.push(live(User, "T5"));
        rows.push(live(Assistant, "A5"));
        let r = rebuild(&session(rows));
        assert_eq!(
            texts(&r.messages),
            ["T1", "A1", "T2", "A2", "T3", "A3", "T4", "A4", "T5", "A5"]
        );
        assert_eq!(r.stats.summaries, 1);
        assert_eq!(r.stats.compaction_copies, 5);
        assert!(r.alternatives.is_empty());
    }

    #[test]
    fn rotation_lineage_drops_reflush_head_summary_and_tail() {
        use Role::*;
        let mut parent = live_turns(1..=3);
        let copy = parent.clone();
        parent.extend(copy);
        parent.push(live(User, "T4"));
        drop_rotation_reflush(&mut parent);
        assert_eq!(texts(&parent), ["T1", "A1", "T2", "A2", "T3", "A3", "T4"]);
        let mut rows = parent;
        rows.extend(reflush());
        let r = rebuild(&session(rows));
        assert_eq!(
            texts(&r.messages),
            ["T1", "A1", "T2", "A2", "T3", "A3", "T4", "A4"]
        );
    }

    #[test]
    fn sibling_children_of_one_compacted_parent() {
        use Role::*;
        // 0.13's API server compacts the same parent again for each request:
        // every child holds head, summary, tail copies and one new turn.
        let mut rows = live_turns(1..=4);
        for new in ["T5", "T6"] {
            rows.extend(reflush());
            rows.extend([live(User, new), live(Assistant, &new.replace('T', "A"))]);
        }
        let r = rebuild(&session(rows));
        assert_eq!(
            texts(&r.messages),
            [
                "T1", "A1", "T2", "A2", "T3", "A3", "T4", "A4", "T5", "A5", "T6", "A6"
            ]
        );
    }

    #[test]
    fn a_child_without_its_parent_drops_the_head_copy_and_summary() {
        use Role::*;
        let rows = vec![
            live(User, "T1"),
            live(Assistant, SUMMARY),
            live(User, "T7"),
            live(Assistant, "A7"),
        ];
        let r = rebuild(&session(rows));
        assert_eq!(texts(&r.messages), ["T7", "A7"]);
    }

    #[test]
    fn starts_compacted_only_when_the_originals_are_missing() {
        use Role::*;
        let lost = vec![live(User, "T1"), live(Assistant, SUMMARY), live(User, "T7")];
        assert!(starts_compacted(&lost));
        let mut kept = vec![
            row(User, "T1", RowState::Compacted),
            row(Assistant, "A1", RowState::Compacted),
        ];
        kept.extend(lost);
        assert!(!starts_compacted(&kept));
        assert!(!starts_compacted(&[
            live(User, "T1"),
            live(Assistant, "A1")
        ]));
    }

    #[test]
    fn undo_then_same_text_is_a_rewind_and_different_text_is_not() {
        use Role::*;
        use RowState::*;
        let rows = vec![
            live(User, "Q1"),
            live(Assistant, "A1"),
            row(User, "Q2", Undone),
            row(Assistant, "bad answer", Undone),
            live(User, "Q2"),
            live(Assistant, "good answer"),
            row(User, "Q3", Undone),
            row(Assistant, "A3", Undone),
            live(User, "something else"),
            live(Assistant, "A4"),
        ];
        let r = rebuild(&session(rows));
        assert_eq!(
            texts(&r.messages),
            ["Q1", "A1", "Q2", "good answer", "something else", "A4"]
        );
        assert_eq!(r.alternatives.len(), 1);
        let a = &r.alternatives[0];
        assert_eq!(a.signal, Signal::Rewind);
        assert_eq!(texts(&r.messages[..a.prompt_end]), ["Q1", "A1", "Q2"]);
        assert_eq!(
            texts(&r.messages[a.prompt_end..a.chosen_end]),
            ["good answer"]
        );
        assert_eq!(texts(&a.rejected), ["bad answer"]);
        assert_eq!(r.stats.undone_rows, 4);
    }

    #[test]
    fn regeneration_keeps_the_later_answer() {
        use Role::*;
        let rows = vec![
            live(User, "u1"),
            live(Assistant, "a1"),
            live(User, "u2"),
            live(Assistant, "a2"),
            live(User, "u2"),
            live(Assistant, "a2b"),
            live(User, "u3"),
            live(Assistant, "a3"),
        ];
        let r = rebuild(&session(rows));
        assert_eq!(texts(&r.messages), ["u1", "a1", "u2", "a2b", "u3", "a3"]);
        let a = &r.alternatives[0];
        assert_eq!(a.signal, Signal::Regenerate);
        assert_eq!(texts(&a.rejected), ["a2"]);
        assert_eq!(texts(&r.messages[a.prompt_end..a.chosen_end]), ["a2b"]);
    }

    #[test]
    fn failed_tool_call_then_good_one_is_a_tool_retry() {
        use Role::*;
        let rows = vec![
            live(User, "go"),
            call("c1", "frobnicate_world"),
            result(
                "c1",
                "Tool 'frobnicate_world' does not exist. Available tools: todo",
            ),
            call("c2", "todo"),
            result("c2", "{\"todos\": []}"),
            live(Assistant, "done"),
            live(User, "again"),
            call("c3", "read_file"),
            result("c3", "{\"error\": \"File not found\"}"),
            live(Assistant, "could not read it"),
        ];
        let r = rebuild(&session(rows));
        assert_eq!(
            r.messages.iter().map(|m| m.role).collect::<Vec<_>>(),
            [
                User, Assistant, Tool, Assistant, User, Assistant, Tool, Assistant
            ]
        );
        assert_eq!(r.messages[2].tool_name.as_deref(), Some("todo"));
        assert_eq!(r.alternatives.len(), 1);
        let a = &r.alternatives[0];
        assert_eq!(a.signal, Signal::ToolRetry);
        assert_eq!(a.prompt_end, 1);
        assert_eq!(r.messages[a.prompt_end].tool_calls[0].name, "todo");
        assert_eq!(a.rejected[0].tool_calls[0].name, "frobnicate_world");
    }

    #[test]
    fn a_retry_must_address_the_same_step() {
        use Role::*;
        let call_with = |id: &str, name: &str, args: serde_json::Value| {
            let mut m = call(id, name);
            m.tool_calls[0].arguments = args;
            m
        };
        let rows = vec![
            live(User, "read the map"),
            call_with("c1", "read_file", serde_json::json!({"path": "/nope"})),
            result("c1", "{\"error\": \"File not found\"}"),
            // Another tool: the plan changed, not a retry of the step.
            call("c2", "todo"),
            result("c2", "{\"todos\": []}"),
            live(Assistant, "could not read it, made a todo instead"),
            live(User, "read the map again"),
            call_with("c3", "read_file", serde_json::json!({"path": "/nope"})),
            result("c3", "{\"error\": \"File not found\"}"),
            // The same tool with corrected arguments: a retry.
            call_with(
                "c4",
                "read_file",
                serde_json::json!({"path": "/maps/nexus.txt"}),
            ),
            result("c4", "{\"content\": \"the map\"}"),
            live(Assistant, "here it is"),
        ];
        let r = rebuild(&session(rows));
        // The first failure stays as it happened; the second is a pair.
        assert_eq!(r.messages.len(), 10);
        assert_eq!(r.messages[1].tool_calls[0].name, "read_file");
        assert_eq!(r.alternatives.len(), 1);
        let a = &r.alternatives[0];
        assert_eq!(a.signal, Signal::ToolRetry);
        assert_eq!(
            r.messages[a.prompt_end].tool_calls[0].arguments["path"],
            "/maps/nexus.txt"
        );
        assert_eq!(a.rejected[0].tool_calls[0].arguments["path"], "/nope");
    }

    /// A v31 row: `uid` names the turn; `a`/`c` are the stored flags.
    fn v31(role: Role, text: &str, uid: &str, a: bool, c: bool) -> Message {
        let state = match (a, c) {
            (true, _) => RowState::Live,
            (false, true) => RowState::Compacted,
            (false, false) => RowState::Undone,
        };
        Message {
            uid: Some(uid.into()),
            summary_flag: text.starts_with("[CONTEXT COMPACTION"),
            ..row(role, text, state)
        }
    }

    #[test]
    fn identity_rebuilds_two_in_place_compactions_without_losing_a_turn() {
        use Role::*;
        let carrier = format!("{SUMMARY}\n\n{SUMMARY_END}\n\nT3");
        // What 0.22 wrote for T1..T5 with two in-place compactions (fixture
        // scenario 6c): originals, head archived, tail rewound, clones, and
        // from the second compaction on the summary as a user row with T3's uid.
        let rows = vec![
            v31(User, "T1", "u1", false, true),
            v31(Assistant, "A1", "a1", false, true),
            v31(User, "T2", "u2", false, false),
            v31(Assistant, "A2", "a2", false, false),
            v31(User, "T3", "u3", false, false),
            v31(Assistant, "A3", "a3", false, false),
            v31(User, "T1", "u1", false, true),
            v31(Assistant, SUMMARY, "s1", false, true),
            v31(User, "T2", "u2", false, true),
            v31(Assistant, "A2", "a2", false, true),
            v31(User, "T3", "u3", false, false),
            v31(Assistant, "A3", "a3", false, false),
            v31(User, "T4", "u4", false, false),
            v31(Assistant, "A4", "a4", false, false),
            v31(User, &carrier, "u3", true, false),
            v31(Assistant, "A3", "a3", true, false),
            v31(User, "T4", "u4", true, false),
            v31(Assistant, "A4", "a4", true, false),
            v31(User, "T5", "u5", true, false),
            v31(Assistant, "A5", "a5", true, false),
        ];
        let r = rebuild(&session(rows));
        assert_eq!(
            texts(&r.messages),
            ["T1", "A1", "T2", "A2", "T3", "A3", "T4", "A4", "T5", "A5"]
        );
        assert_eq!(r.stats.undone_rows, 0, "rewound originals with clones");
        assert_eq!(r.stats.summaries, 2);
        assert!(r.alternatives.is_empty(), "no rewind pair from clones");
    }

    #[test]
    fn identity_gives_back_a_carried_turn_whose_rows_are_gone_and_keeps_real_undos() {
        use Role::*;
        let carrier = format!("{SUMMARY}\n{SUMMARY_END}\n\nT2");
        let rows = vec![
            v31(User, "T1", "u1", true, false),
            v31(Assistant, "A1", "a1", true, false),
            v31(User, &carrier, "u2", true, false),
            v31(Assistant, "A2", "a2", true, false),
            // /undo of T3, then the same text again: a rewind pair.
            v31(User, "T3", "u3", false, false),
            v31(Assistant, "bad", "a3", false, false),
            v31(User, "T3", "u3b", true, false),
            v31(Assistant, "good", "a3b", true, false),
        ];
        let r = rebuild(&session(rows));
        assert_eq!(texts(&r.messages), ["T1", "A1", "T2", "A2", "T3", "good"]);
        assert_eq!(r.alternatives.len(), 1);
        assert_eq!(r.alternatives[0].signal, Signal::Rewind);
        assert_eq!(texts(&r.alternatives[0].rejected), ["bad"]);
    }

    #[test]
    fn a_composite_and_what_it_absorbed_are_one_turn() {
        use Role::*;
        let mut composite = v31(User, "first\n\nsecond", "u1", true, false);
        composite.absorbed = vec!["u2".into()];
        let rows = vec![
            v31(User, "first", "u1", false, false),
            v31(User, "second", "u2", false, false),
            composite,
            v31(Assistant, "reply", "a1", true, false),
        ];
        let r = rebuild(&session(rows));
        assert_eq!(texts(&r.messages), ["first\n\nsecond", "reply"]);
        assert_eq!(r.stats.undone_rows, 0);
    }

    #[test]
    fn a_result_is_named_after_the_bridge_call_it_answers() {
        use Role::*;
        let mut res = result("c1", "{\"todos\": []}");
        res.tool_name = Some("todo_list".into());
        let rows = vec![
            live(User, "go"),
            call("c1", "tool_call"),
            res,
            live(Assistant, "ok"),
        ];
        let r = rebuild(&session(rows));
        assert_eq!(r.messages[2].tool_name.as_deref(), Some("tool_call"));
    }

    #[test]
    fn orphan_user_turns_merge_and_harness_turns_go() {
        use Role::*;
        let rows = vec![
            live(User, "first"),
            live(User, "second"),
            live(Assistant, "reply"),
            live(
                User,
                "Review the conversation above and update the skill library now",
            ),
            live(Assistant, "curator reply"),
            live(User, "next"),
            live(Assistant, "r2"),
        ];
        let r = rebuild(&session(rows));
        assert_eq!(
            texts(&r.messages),
            ["first\n\nsecond", "reply", "next", "r2"]
        );
        assert_eq!(r.stats.harness_rows, 2);
    }
}
