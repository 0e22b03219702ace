//! Making samples fit the token budget, shared by SFT and DPO: counting a
//! candidate, trying distractor tools, and shortening long tool results.

use serde_json::Value;

use crate::content::{mark_cut, split_marked};
use crate::format::OutMsg;
use crate::format::tools::SessionTools;
use crate::skip::Skip;
use crate::tokens::{Count, Counter, Estimate, Sample, TOKENS_TOOL_PREAMBLE};

/// Tool-result text kept at least on each side of a cut.
const KEEP_EACH_SIDE: usize = 200;

pub struct Fitter<'a> {
    pub counter: &'a mut Counter,
    pub max: usize,
    /// The first error of the chat template on a sample (it is then
    /// skipped), and how many candidates it failed on.
    pub template_error: Option<String>,
    pub template_failures: usize,
}

impl Fitter<'_> {
    pub fn new(counter: &mut Counter, max: usize) -> Fitter<'_> {
        Fitter {
            counter,
            max,
            template_error: None,
            template_failures: 0,
        }
    }

    /// The skip reason for a sample that did not fit: `template_error` when
    /// the template failed on it since `failures_before`.
    pub fn reason(&self, failures_before: usize) -> Skip {
        if self.template_failures > failures_before {
            Skip::TemplateError
        } else {
            Skip::OverBudget
        }
    }

    /// The count of a candidate, with its trainable tokens; `None` when the
    /// template cannot render it (treated as not fitting, and remembered
    /// for the warning).
    pub fn count(&mut self, s: &Sample<'_>) -> Option<Count> {
        let counted = self.counter.count(s);
        self.checked(counted)
    }

    fn checked(&mut self, counted: anyhow::Result<Count>) -> Option<Count> {
        match counted {
            Ok(c) => Some(c),
            Err(e) => {
                self.template_error.get_or_insert_with(|| format!("{e:#}"));
                self.template_failures += 1;
                None
            }
        }
    }

    /// The count when the candidate fits the budget (its trainable tokens
    /// are not counted: see [`Fitter::count`]).
    pub fn fits(&mut self, s: &Sample<'_>) -> Option<Count> {
        let counted = self.counter.total(s);
        self.checked(counted).filter(|c| c.total <= self.max)
    }

    /// Adds up to `n` other offered tools to `tools`, each only
    /// if the sample of `system` and `messages` still fits. Returns those
    /// added and the count with the last of them.
    pub fn add_distractors(
        &mut self,
        session: &SessionTools,
        tools: &mut Vec<Value>,
        system: Option<&str>,
        messages: &[OutMsg],
        n: usize,
    ) -> (Vec<Value>, Option<Count>) {
        // A distractor may take an eighth of the budget at most, so that
        // they teach choosing without crowding out the conversation.
        let cap = self.max / 8;
        let candidates: Vec<Value> = session
            .distractors(tools)
            .filter(|d| Estimate::tools(std::slice::from_ref(*d)) - TOKENS_TOOL_PREAMBLE <= cap)
            .take(n * 2)
            .cloned()
            .collect();
        let (mut added, mut count) = (Vec::new(), None);
        for d in candidates {
            if added.len() == n {
                break;
            }
            let mut trial = tools.clone();
            session.insert(&mut trial, &d);
            if let Some(c) = self.fits(&Sample {
                system,
                messages,
                tools: Some(&trial),
            }) {
                *tools = trial;
                count = Some(c);
                added.push(d);
            }
        }
        (added, count)
    }

    /// Shortens the longest tool results of `messages` (keeping their head
    /// and tail around a visible marker) until the sample fits. Returns the
    /// count when it does.
    pub fn shorten_tool_results(
        &mut self,
        system: Option<&str>,
        messages: &mut [OutMsg],
        tools: Option<&[Value]>,
    ) -> Option<Count> {
        for _ in 0..8 {
            let sample = Sample {
                system,
                messages,
                tools,
            };
            // Totals while cutting; the trainable tokens once it fits.
            let counted = self.counter.total(&sample);
            let total = self.checked(counted)?;
            if total.total <= self.max {
                return self.count(&sample);
            }
            let c = total;
            let over_bytes = (c.total - self.max) * 4 + 64;
            let longest = messages
                .iter_mut()
                .filter(|m| m.role == "tool")
                .max_by_key(|m| m.content.as_deref().map_or(0, str::len))?;
            let text = longest.content.as_deref().unwrap_or_default();
            let shorter = cut_middle(text, over_bytes)?;
            longest.content = Some(shorter);
        }
        None
    }
}

/// `text` with about `cut` more bytes taken out of its middle, marked;
/// `None` when it is already as short as it may get.
pub fn cut_middle(text: &str, cut: usize) -> Option<String> {
    // A text cut before carries its marker: cut the original parts further.
    let (head, tail, already) = match split_marked(text) {
        Some(parts) => parts,
        None => (text, "", 0),
    };
    let (head, tail) = if tail.is_empty() {
        let mid = floor_char(head, head.len() / 2);
        (&head[..mid], &head[mid..])
    } else {
        (head, tail)
    };
    let total = head.len() + tail.len();
    if total <= 2 * KEEP_EACH_SIDE {
        return None;
    }
    let keep = total.saturating_sub(cut).max(2 * KEEP_EACH_SIDE);
    let keep_head = floor_char(head, (keep / 2).min(head.len()));
    let keep_tail = (keep - keep_head).min(tail.len());
    let tail_from = ceil_char(tail, tail.len() - keep_tail);
    let removed = already + (head.len() - keep_head) + tail_from;
    Some(mark_cut(&head[..keep_head], &tail[tail_from..], removed))
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::{MARK_CLOSE, MARK_OPEN};

    #[test]
    fn cuts_keep_head_and_tail_and_add_up() {
        let text = format!("HEAD{}TAIL", "x".repeat(5000));
        let once = cut_middle(&text, 3000).unwrap();
        assert!(once.starts_with("HEAD") && once.ends_with("TAIL"));
        assert!(once.len() < text.len() - 2900);
        let twice = cut_middle(&once, 1000).unwrap();
        assert!(twice.starts_with("HEAD") && twice.ends_with("TAIL"));
        let (_, _, n) = split_marked(&twice).unwrap();
        assert_eq!(text.len(), n + twice.len() - marker_len(&twice));
        assert!(cut_middle(&"é".repeat(150), 10).is_none());
        let short = cut_middle(&"é".repeat(1000), 100_000).unwrap();
        assert!(short.starts_with('é') && short.ends_with('é'));
    }

    fn marker_len(s: &str) -> usize {
        let open = s.find(MARK_OPEN).unwrap();
        let close = s.find(MARK_CLOSE).unwrap() + MARK_CLOSE.len();
        close - open
    }
}
