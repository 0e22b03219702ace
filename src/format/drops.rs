//! Exchanges and pairs a run could not write although they were selected
//! and trainable: over the budget even with the shortest system prompt,
//! or refused by the chat template. They are named in one warning line
//! (kept under `--quiet`), and `--fail-on-drop` turns them into a failure.

use std::collections::BTreeMap;

use crate::skip::Skip;

/// Sessions named in the warning at most.
const NAMED: usize = 5;

/// Drops per reason and per session.
#[derive(Debug, Default, Clone)]
pub struct Drops {
    pub over_budget: usize,
    pub template_error: usize,
    /// Drops per session id (both reasons).
    pub sessions: BTreeMap<String, usize>,
}

impl Drops {
    /// Notes what a formatter skipped in `session`.
    pub fn note(&mut self, session: &str, reasons: &[Skip]) {
        let mut n = 0;
        for r in reasons {
            match r {
                Skip::OverBudget => self.over_budget += 1,
                Skip::TemplateError => self.template_error += 1,
                _ => continue,
            }
            n += 1;
        }
        if n > 0 {
            *self.sessions.entry(session.to_string()).or_default() += n;
        }
    }

    pub fn total(&self) -> usize {
        self.over_budget + self.template_error
    }

    /// The one warning line, when anything was dropped.
    pub fn warning(&self, max_tokens: usize) -> Option<String> {
        if self.total() == 0 {
            return None;
        }
        let mut most: Vec<(&String, &usize)> = self.sessions.iter().collect();
        most.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let named: Vec<String> = most
            .iter()
            .take(NAMED)
            .map(|(s, n)| format!("{s} ({n})"))
            .collect();
        let more = most.len().saturating_sub(NAMED);
        let mut why = Vec::new();
        if self.over_budget > 0 {
            why.push(format!(
                "{} over --max-tokens {max_tokens} even with the shortest system prompt (raise --max-tokens)",
                self.over_budget
            ));
        }
        if self.template_error > 0 {
            why.push(format!(
                "{} refused by the chat template",
                self.template_error
            ));
        }
        Some(format!(
            "dropped {} selected turn(s) or pair(s): {}; in session(s) {}{}",
            self.total(),
            why.join(", "),
            named.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_warning_names_the_sessions_with_most_drops_first() {
        let mut d = Drops::default();
        assert_eq!(d.warning(2048), None);
        d.note("a", &[Skip::OverBudget, Skip::NoReply]);
        d.note("b", &[Skip::OverBudget, Skip::TemplateError]);
        d.note("c", &[Skip::NearDuplicate]);
        assert_eq!(d.total(), 3);
        let w = d.warning(2048).unwrap();
        assert!(w.starts_with("dropped 3 "), "{w}");
        assert!(w.contains("session(s) b (2), a (1)"), "{w}");
        assert!(w.contains("1 refused by the chat template"), "{w}");
    }
}
