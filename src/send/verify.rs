//! `send --verify`: prove that the turn was captured.
//!
//! The stores under `--hermes-home` are read (read-only, through the same
//! reader the export uses) every 250 ms until the session holds one more
//! occurrence of "this exact user turn followed by an assistant reply" than
//! it did before the event was sent, and the rebuilt conversation (what
//! `export` would write) contains that turn followed by a reply. Counting
//! against a baseline matters because identical events (two `tick`s without
//! detail) render to identical turns: without it the earlier one would prove
//! the later.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::home::HermesHome;
use crate::model::{Message, Role, RowState, Session};
use crate::rebuild::rebuild;
use crate::report::Report;
use crate::source::Stores;

/// Time between two reads of the stores.
pub const POLL: Duration = Duration::from_millis(250);

/// What the stores say about the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seen {
    /// Stored (not undone) user rows equal to the turn that have an
    /// assistant reply before the next user row.
    pub answered: usize,
    /// The rebuilt conversation has the turn followed by a reply.
    pub in_rebuilt: bool,
}

/// Reads the session once. `Ok(None)` when there is no store or no such
/// session yet.
pub fn look(home: &HermesHome, session: &str, turn: &str) -> Result<Option<Seen>> {
    let mut report = Report::new(false, true);
    let stores = match Stores::open(home, &mut report) {
        Ok(s) => s,
        // No store at all (yet): Hermes may not have written anything.
        Err(_) if !home.state_db().exists() => return Ok(None),
        Err(e) => return Err(e),
    };
    let Some(s) = stores.load_session(session, &mut report)? else {
        return Ok(None);
    };
    Ok(Some(seen(&s, turn)))
}

/// Counts the captured occurrences of `turn` in a loaded session.
pub fn seen(session: &Session, turn: &str) -> Seen {
    let stored: Vec<&Message> = session
        .messages
        .iter()
        .filter(|m| m.state != RowState::Undone)
        .collect();
    let rebuilt = rebuild(session).messages;
    Seen {
        answered: answered(stored.iter().copied(), turn),
        in_rebuilt: answered(rebuilt.iter(), turn) > 0,
    }
}

/// How many user messages equal to `turn` are followed, before the next
/// user message, by an assistant reply with text.
fn answered<'a>(messages: impl Iterator<Item = &'a Message>, turn: &str) -> usize {
    let mut count = 0;
    let mut open = false;
    for m in messages {
        match m.role {
            Role::User => open = m.content == turn,
            Role::Assistant if open && m.is_final_answer() => {
                count += 1;
                open = false;
            }
            _ => {}
        }
    }
    count
}

/// Polls until the session shows one more answered occurrence of `turn`
/// than `baseline`, or `timeout` passes. Returns whether it did, and the
/// last read error (if the stores could not be read).
pub fn wait(
    home: &HermesHome,
    session: &str,
    turn: &str,
    baseline: usize,
    timeout: Duration,
) -> (bool, Option<String>) {
    let deadline = Instant::now() + timeout;
    loop {
        let last_error = match look(home, session, turn) {
            Ok(Some(seen)) if seen.answered > baseline && seen.in_rebuilt => return (true, None),
            Ok(_) => None,
            Err(e) => Some(format!("{e:#}")),
        };
        let now = Instant::now();
        if now >= deadline {
            return (false, last_error);
        }
        thread::sleep(POLL.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(rows: &[(Role, &str)]) -> Session {
        Session {
            meta: crate::model::SessionMeta {
                id: "nexus-w".into(),
                source: "api_server".into(),
                ..Default::default()
            },
            messages: rows.iter().map(|(r, t)| Message::new(*r, *t)).collect(),
            ..Session::default()
        }
    }

    #[test]
    fn counts_answered_turns() {
        let t = "[perception] tick: World 'w' ticked.";
        let s = session(&[
            (Role::User, t),
            (Role::Assistant, "a"),
            (Role::User, "other"),
            (Role::Assistant, "b"),
            (Role::User, t),
            (Role::Assistant, "c"),
            (Role::User, t),
        ]);
        assert_eq!(seen(&s, t).answered, 2);
        assert!(seen(&s, t).in_rebuilt);
        assert_eq!(seen(&s, "nope"), Seen::default());
    }

    #[test]
    fn a_tool_call_is_not_a_reply() {
        let t = "[perception] tick: World 'w' ticked. Detail: USE_TOOL";
        let mut s = session(&[(Role::User, t), (Role::Assistant, "")]);
        assert_eq!(seen(&s, t).answered, 0);
        s.messages.push(Message::new(Role::Tool, "{}"));
        s.messages.push(Message::new(Role::Assistant, "done"));
        assert_eq!(seen(&s, t).answered, 1);
    }

    #[test]
    fn undone_rows_do_not_count() {
        let t = "[perception] tick: World 'w' ticked.";
        let mut s = session(&[(Role::User, t), (Role::Assistant, "a")]);
        for m in &mut s.messages {
            m.state = RowState::Undone;
        }
        assert_eq!(seen(&s, t).answered, 0);
    }
}
