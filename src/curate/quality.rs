//! Quality rules besides the formatters' own (empty replies, replies that
//! ended in an error or at the length limit are already turn problems):
//! replies too short to teach anything, and sessions that hold only
//! harness traffic.

use crate::format::Exchange;
use crate::model::Role;
use crate::rebuild::Rebuilt;

use crate::skip::Skip;

/// Marks the exchanges whose final reply is shorter than `min` characters
/// (surrounding whitespace aside) as [`Skip::ShortReply`]; returns how
/// many it marked. Exchanges with a problem already keep theirs.
pub fn mark_short_replies(exchanges: &mut [Exchange<'_>], min: usize) -> usize {
    if min == 0 {
        return 0;
    }
    let mut n = 0;
    for ex in exchanges.iter_mut().filter(|e| e.problem.is_none()) {
        let reply = ex.msgs.last().filter(|m| m.role == Role::Assistant);
        if reply.is_some_and(|m| m.content.trim().chars().count() < min) {
            ex.problem = Some(Skip::ShortReply);
            n += 1;
        }
    }
    n
}

/// A session whose rows were all harness traffic (background reviews and
/// the like, which the rebuild takes out): nothing a person said.
pub fn harness_only(rebuilt: &Rebuilt) -> bool {
    rebuilt.stats.harness_rows > 0 && !rebuilt.messages.iter().any(|m| m.role == Role::User)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Message;

    #[test]
    fn short_replies_are_marked_once() {
        let msgs = vec![
            Message::new(Role::User, "hello"),
            Message::new(Role::Assistant, " ok "),
            Message::new(Role::User, "and?"),
            Message::new(Role::Assistant, "a longer answer"),
        ];
        let mut ex = crate::format::exchanges(&msgs);
        ex.iter_mut().for_each(|e| e.problem = None);
        assert_eq!(mark_short_replies(&mut ex, 3), 1);
        assert_eq!(ex[0].problem, Some(Skip::ShortReply));
        assert_eq!(ex[1].problem, None);
        assert_eq!(mark_short_replies(&mut ex, 0), 0);
    }
}
