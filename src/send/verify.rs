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
use crate::model::{Message, Role, Session};
use crate::rebuild::{rebuild, stored_turns};
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

/// Counts the captured occurrences of `turn` in a loaded session. Stored
/// turns are counted once each ([`stored_turns`]): a compaction that clones
/// an earlier identical turn (0.22's rotated child repeats the head and the
/// tail with the same `message_uid`; an in-place compaction keeps the
/// archived original beside the clone) does not prove the new one, and a
/// summary row is no reply.
pub fn seen(session: &Session, turn: &str) -> Seen {
    let stored = stored_turns(session);
    let rebuilt = rebuild(session).messages;
    Seen {
        answered: answered(stored.iter(), turn),
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
    use crate::model::RowState;

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

    /// A v31 store (schema 31, turn identity) in a temp dir.
    struct V31 {
        dir: tempfile::TempDir,
        conn: rusqlite::Connection,
    }

    impl V31 {
        fn new() -> V31 {
            let dir = tempfile::tempdir().unwrap();
            let conn = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
            conn.execute_batch(
                "CREATE TABLE schema_version (version INTEGER NOT NULL);
                 INSERT INTO schema_version VALUES (31);
                 CREATE TABLE sessions (id TEXT PRIMARY KEY, source TEXT NOT NULL,
                   parent_session_id TEXT, started_at REAL NOT NULL, end_reason TEXT,
                   archived INTEGER NOT NULL DEFAULT 0, auto_archived INTEGER NOT NULL DEFAULT 0,
                   pinned INTEGER NOT NULL DEFAULT 0, hidden INTEGER NOT NULL DEFAULT 0);
                 CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT,
                   session_id TEXT NOT NULL, role TEXT NOT NULL, content TEXT,
                   tool_call_id TEXT, tool_calls TEXT, tool_name TEXT, timestamp REAL NOT NULL,
                   finish_reason TEXT, _compressed_summary INTEGER NOT NULL DEFAULT 0,
                   active INTEGER NOT NULL DEFAULT 1, compacted INTEGER NOT NULL DEFAULT 0,
                   message_uid TEXT, absorbed_message_uids TEXT);",
            )
            .unwrap();
            V31 { dir, conn }
        }

        fn session(&self, id: &str, parent: Option<&str>, end: Option<&str>) {
            self.conn
                .execute(
                    "INSERT INTO sessions (id, source, parent_session_id, started_at, end_reason) VALUES (?1, 'api_server', ?2, 1.0, ?3)",
                    rusqlite::params![id, parent, end],
                )
                .unwrap();
        }

        /// A row: `flags` are (active, compacted, _compressed_summary).
        fn row(
            &self,
            session: &str,
            role: &str,
            text: &str,
            uid: &str,
            ts: f64,
            flags: (i64, i64, i64),
        ) {
            self.conn
                .execute(
                    "INSERT INTO messages (session_id, role, content, timestamp, finish_reason, active, compacted, _compressed_summary, message_uid) VALUES (?1, ?2, ?3, ?4, 'stop', ?5, ?6, ?7, ?8)",
                    rusqlite::params![session, role, text, ts, flags.0, flags.1, flags.2, uid],
                )
                .unwrap();
        }

        fn look(&self, session: &str, turn: &str) -> Seen {
            let home = HermesHome::resolve(Some(self.dir.path()), None).unwrap();
            look(&home, session, turn)
                .unwrap()
                .expect("the session is stored")
        }
    }

    const LIVE: (i64, i64, i64) = (1, 0, 0);
    const SUMMARY: &str = "[CONTEXT COMPACTION — REFERENCE ONLY] Earlier turns were compacted.";

    #[test]
    fn a_rotated_childs_clones_do_not_prove_a_repeated_turn() {
        let t = "[perception] tick: World 'w' ticked.";
        let db = V31::new();
        // As 0.22 rotates: the parent keeps its rows, the child starts with
        // a clone of the head turn, the summary, and clones of the tail.
        db.session("nexus-w", None, Some("compression"));
        db.session("child", Some("nexus-w"), None);
        db.row("nexus-w", "user", t, "u1", 1.0, LIVE);
        db.row("nexus-w", "assistant", "a", "u2", 2.0, LIVE);
        db.row("nexus-w", "user", "other", "u3", 3.0, LIVE);
        db.row("nexus-w", "assistant", "b", "u4", 4.0, LIVE);
        db.row("child", "user", t, "u1", 1.0, LIVE);
        db.row("child", "assistant", SUMMARY, "u5", 5.0, (1, 0, 1));
        db.row("child", "user", "other", "u3", 3.0, LIVE);
        db.row("child", "assistant", "b", "u4", 4.0, LIVE);
        // The redirect: the id sent before the compaction names the lineage.
        assert_eq!(db.look("nexus-w", t).answered, 1);
        db.row("child", "user", t, "u6", 6.0, LIVE);
        assert_eq!(db.look("nexus-w", t).answered, 1, "not answered yet");
        db.row("child", "assistant", "c", "u7", 7.0, LIVE);
        let seen = db.look("nexus-w", t);
        assert_eq!((seen.answered, seen.in_rebuilt), (2, true));
    }

    #[test]
    fn an_archived_original_and_its_clone_are_one_turn() {
        let t = "[perception] tick: World 'w' ticked.";
        let db = V31::new();
        db.session("nexus-w", None, None);
        // In place: the head archived, the tail's originals rewound, then
        // the summary and the tail's clones as fresh rows.
        db.row("nexus-w", "user", t, "u1", 1.0, (0, 1, 0));
        db.row("nexus-w", "assistant", "a", "u2", 2.0, (0, 1, 0));
        db.row("nexus-w", "user", t, "u3", 3.0, (0, 0, 0));
        db.row("nexus-w", "assistant", "b", "u4", 4.0, (0, 0, 0));
        db.row("nexus-w", "user", SUMMARY, "u5", 5.0, (1, 0, 1));
        db.row("nexus-w", "user", t, "u3", 3.0, LIVE);
        db.row("nexus-w", "assistant", "b", "u4", 4.0, LIVE);
        assert_eq!(db.look("nexus-w", t).answered, 2);
        // An archived clone of the head turn beside its original.
        db.row("nexus-w", "user", t, "u1", 1.0, (0, 1, 0));
        db.row("nexus-w", "assistant", "a", "u2", 2.0, (0, 1, 0));
        assert_eq!(db.look("nexus-w", t).answered, 2);
    }
}
