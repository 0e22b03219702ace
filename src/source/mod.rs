//! The Hermes stores, and how they combine into one session each.
//!
//! Authority: `state.db` (the canonical store) wins; `response_store.db` adds
//! Responses `instructions` and whole sessions the DB lacks; the
//! `sessions/` files add tool definitions and sessions nobody else has.
//! A session's identity is its id, so each is produced once.

pub mod response_store;
pub mod session_files;
pub mod sqlite;
pub mod state_db;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, bail};
use serde_json::Value;

use crate::content;
use crate::home::HermesHome;
use crate::model::{Message, Origin, Role, RowState, Session, SessionMeta};
use crate::rebuild;
use crate::report::Report;
use response_store::ResponseStore;
use session_files::{IndexEntry, SessionFiles};
use state_db::StateDb;

/// Opens one SQLite store at `path` if it exists. A store that cannot be
/// opened, or is a FIFO or device (SQLite would block on a FIFO; a device is
/// no store), is reported as an unreadable input and left out.
fn open_store<T>(
    path: &std::path::Path,
    report: &mut Report,
    open: impl FnOnce(&std::path::Path, &mut Report) -> Result<T>,
) -> Result<Option<T>> {
    if let Some(kind) = crate::safe_io::special_file(path) {
        report.input_problem(format!("{}: is {kind}, not a regular file", path.display()))?;
        return Ok(None);
    }
    if !path.exists() {
        return Ok(None);
    }
    match open(path, report) {
        Ok(store) => Ok(Some(store)),
        Err(e) => {
            report.input_problem(format!("{e:#}"))?;
            Ok(None)
        }
    }
}

/// All stores found under one Hermes home, opened read-only.
pub struct Stores {
    /// `--session`: files of other sessions are not even read (a session
    /// file can be hundreds of megabytes).
    pub only_ids: Vec<String>,
    /// Rows of a long state.db session read per part.
    pub part_rows: usize,
    pub home: HermesHome,
    pub state: Option<StateDb>,
    pub responses: Option<ResponseStore>,
    pub files: SessionFiles,
    index: BTreeMap<String, IndexEntry>,
}

/// Items the state.db reader may read ahead of the one being formatted,
/// and the message bytes they may hold (a session larger than that waits
/// until the ones before it are done, so at most two very long parts are
/// in memory at once).
const READ_AHEAD: usize = 128;
const READ_AHEAD_BYTES: usize = 16 << 20;
/// Items the reader hands over at once: each hand-off may wake the
/// receiving thread, which costs about what reading a short session does.
/// A partial batch goes before the reader waits for bytes given back.
const READ_BATCH: usize = 32;

/// Message bytes read but not yet formatted, shared by the reader (which
/// waits while the next session would take them past [`READ_AHEAD_BYTES`])
/// and the consumer (which gives them back).
#[derive(Default)]
struct InFlight {
    /// The bytes, and whether the consumer has stopped (then nobody waits).
    state: std::sync::Mutex<(usize, bool)>,
    done: std::sync::Condvar,
}

impl InFlight {
    /// Takes `n` bytes, waiting while that would go past the budget;
    /// `before_waiting` runs (without the lock) before any wait.
    fn take(&self, n: usize, before_waiting: &dyn Fn()) {
        let must_wait = |st: &(usize, bool)| st.0 > 0 && st.0 + n > READ_AHEAD_BYTES && !st.1;
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if must_wait(&st) {
            drop(st);
            before_waiting();
            st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        }
        while must_wait(&st) {
            st = self.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        st.0 += n;
    }

    fn give_back(&self, n: usize) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0 -= n;
        self.done.notify_one();
    }
}

/// Tells the reader the consumer has stopped, however it stops (an error,
/// or a panic), so that it never waits for bytes given back.
struct StopOnDrop<'a>(&'a InFlight);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.0.done.notify_all();
    }
}

/// What a session's messages take in memory, about: their text and 256
/// bytes each.
pub fn message_bytes(s: &Session) -> usize {
    s.messages.iter().map(|m| m.content.len() + 256).sum()
}

/// What the state.db reader hands over, in the order it read it.
enum DbRead {
    /// A session the filters leave out.
    Unwanted(SessionMeta),
    /// A session was read that gave no part.
    Wanted,
    /// A session (or part), with the message bytes it takes from the budget,
    /// and whether it is the first part of a session read (one message a
    /// session, not two: each may wake the receiving thread).
    Session(Session, usize, bool),
    /// A bad row of the session just read.
    Problem(String),
}

/// Reads every wanted state.db session (`heads`, or all of them) and sends
/// it, part by part, then its bad rows. Stops when the receiver is gone.
fn read_db(
    db: &StateDb,
    heads: Option<Vec<SessionMeta>>,
    part_rows: usize,
    want: &(dyn Fn(&SessionMeta) -> bool + Sync),
    tx: &std::sync::mpsc::SyncSender<Vec<DbRead>>,
    in_flight: &InFlight,
) -> Result<()> {
    let batch = std::cell::RefCell::new(Vec::with_capacity(READ_BATCH));
    let flush = || -> Result<()> {
        let items = std::mem::take(&mut *batch.borrow_mut());
        if items.is_empty() {
            return Ok(());
        }
        tx.send(items)
            .map_err(|_| anyhow::anyhow!("export stopped"))
    };
    let send = |item: DbRead| -> Result<()> {
        let full = {
            let mut b = batch.borrow_mut();
            b.push(item);
            b.len() >= READ_BATCH
        };
        if full { flush() } else { Ok(()) }
    };
    let one = |head: SessionMeta, prompt: &dyn Fn() -> Result<Option<String>>| -> Result<()> {
        if head.is_rotation_child() {
            return Ok(());
        }
        if !want(&head) {
            return send(DbRead::Unwanted(head));
        }
        // Bad rows are reported after the session's parts, as they were
        // found while reading them.
        let mut problems = Vec::new();
        let mut first = true;
        db.load_parts_with(
            &head,
            prompt()?,
            part_rows,
            &mut |p| {
                problems.push(p);
                Ok(())
            },
            &mut |s| {
                let n = message_bytes(&s);
                // A refused hand-off shows at the next one.
                in_flight.take(n, &|| drop(flush()));
                send(DbRead::Session(s, n, std::mem::take(&mut first)))
            },
        )?;
        if first {
            send(DbRead::Wanted)?;
        }
        problems
            .into_iter()
            .try_for_each(|p| send(DbRead::Problem(p)))
    };
    let read = match heads {
        Some(heads) => heads.into_iter().try_for_each(|h| {
            let id = h.id.clone();
            one(h, &|| db.system_prompt(&id))
        }),
        None => db.for_each_head_prompted(one),
    };
    // What was read before an error still arrives, before it.
    let flushed = flush();
    read.and(flushed)
}

impl Stores {
    /// Opens whatever exists. A store that cannot be read is reported (and
    /// the run becomes partial); finding no store at all is an error.
    pub fn open(home: &HermesHome, report: &mut Report) -> Result<Stores> {
        let state = open_store(&home.state_db(), report, |path, report| {
            let db = StateDb::open(path)?;
            if let Some(note) = db.schema_note() {
                report.warn(note);
            }
            Ok(db)
        })?;
        let responses = open_store(&home.response_store(), report, |path, report| {
            ResponseStore::open(path, &mut |p| report.input_problem(p))
        })?;
        let files = match SessionFiles::scan(&home.sessions_dir(), &home.dir) {
            Ok(f) => f,
            Err(e) => {
                report.input_problem(format!("{e:#}"))?;
                SessionFiles::default()
            }
        };
        let mut index = BTreeMap::new();
        if let Some(path) = &files.index {
            match session_files::read_index(path) {
                Ok(i) => index = i,
                Err(why) => report.input_problem(format!("{}: {why}", path.display()))?,
            }
        }
        if state.is_none() && responses.is_none() && files.is_empty() && !report.partial {
            let profiles = home.profiles();
            bail!(
                "no Hermes stores under {} (looked for state.db, response_store.db and sessions/){}",
                home.dir.display(),
                if profiles.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; profiles here: {} (choose one with --profile)",
                        profiles.join(", ")
                    )
                }
            );
        }
        Ok(Stores {
            only_ids: Vec::new(),
            part_rows: state_db::PART_ROWS,
            home: home.clone(),
            state,
            responses,
            files,
            index,
        })
    }

    /// Where a session that recorded no definition of a tool it calls
    /// borrows one: the tool sets state.db keeps (v31, newest Hermes version
    /// first), then the session snapshots.
    pub fn tool_catalog(&self) -> session_files::ToolCatalog {
        let mut catalog = session_files::ToolCatalog::new(&self.files);
        if let Some(db) = &self.state
            && let Ok(sets) = db.tool_sets()
        {
            catalog.add_sets(sets.into_iter().map(|(_, tools)| tools).collect());
        }
        catalog
    }

    fn in_db(&self, id: &str) -> Result<bool> {
        match &self.state {
            Some(db) => db.contains(id),
            None => Ok(false),
        }
    }

    /// Calls `f` with every session `want`s, once each, in a fixed order:
    /// state.db sessions by id (a compression lineage as one session, under
    /// its first id), then sessions only the response store has, then
    /// sessions only the files have.
    ///
    /// `db_heads` limits the state.db part to those sessions (incremental
    /// runs pass the sessions touched since the last run). `unwanted` hears
    /// of every state.db session `want` left out.
    pub fn each_session(
        &self,
        report: &mut Report,
        db_heads: Option<Vec<SessionMeta>>,
        want: &(dyn Fn(&SessionMeta) -> bool + Sync),
        unwanted: &mut dyn FnMut(&SessionMeta),
        f: &mut dyn FnMut(Session, &mut Report) -> Result<()>,
    ) -> Result<()> {
        if let Some(db) = &self.state {
            // state.db is read on a thread of its own (with its own
            // connection), so reading the next sessions overlaps with
            // formatting this one; what it reads arrives here in order.
            let reader = db.reopen()?;
            let part_rows = self.part_rows;
            let in_flight = InFlight::default();
            std::thread::scope(|scope| -> Result<()> {
                let (tx, rx) =
                    std::sync::mpsc::sync_channel::<Vec<DbRead>>(READ_AHEAD / READ_BATCH);
                let gate = &in_flight;
                let producer =
                    scope.spawn(move || read_db(&reader, db_heads, part_rows, want, &tx, gate));
                let stop = StopOnDrop(gate);
                // The reader sets the pace: this thread, woken at every
                // batch it is handed, should not take the reader's core
                // (see `crate::sched`; the reader, started above, keeps the
                // ordinary policy).
                let batch = crate::sched::Batch::enter();
                for item in rx.into_iter().flatten() {
                    match item {
                        DbRead::Unwanted(head) => unwanted(&head),
                        DbRead::Wanted => report.read_session(Origin::StateDb.as_str()),
                        DbRead::Session(mut s, n, first) => {
                            if first {
                                report.read_session(Origin::StateDb.as_str());
                            }
                            self.enrich(&mut s, report)?;
                            let done = f(s, report);
                            in_flight.give_back(n);
                            done?;
                        }
                        DbRead::Problem(p) => report.input_problem(p)?,
                    }
                }
                drop((stop, batch));
                producer.join().expect("the state.db reader does not panic")
            })?;
        }
        self.each_other_session(report, want, f)
    }

    /// The sessions only the response store or the session files hold (see
    /// [`Stores::each_session`]).
    fn each_other_session(
        &self,
        report: &mut Report,
        want: &dyn Fn(&SessionMeta) -> bool,
        f: &mut dyn FnMut(Session, &mut Report) -> Result<()>,
    ) -> Result<()> {
        let mut done = BTreeSet::new();
        for s in self.response_sessions()? {
            done.insert(s.id.clone());
            if want(&head_of(&s)) {
                let mut s = s;
                self.enrich(&mut s, report)?;
                report.read_session(Origin::ResponseStore.as_str());
                f(s, report)?;
            }
        }
        let ids: BTreeSet<&String> = self
            .files
            .snapshots
            .keys()
            .chain(self.files.transcripts.keys())
            .collect();
        for id in ids {
            if done.contains(id.as_str())
                || (!self.only_ids.is_empty() && !self.only_ids.contains(id))
                || self.in_db(id)?
            {
                continue;
            }
            if !self.big_file_wanted(id, want) {
                continue;
            }
            if let Some(s) = self.file_session(id, report)?
                && want(&head_of(&s))
            {
                report.read_session(s.origin.map_or("sessions", |o| o.as_str()));
                f(s, report)?;
            }
        }
        Ok(())
    }

    /// A snapshot too large to read whole is first streamed for its head
    /// (id, platform, model), so one the filters leave out is neither read
    /// nor reported.
    fn big_file_wanted(&self, id: &str, want: &dyn Fn(&SessionMeta) -> bool) -> bool {
        let Some(path) = self.files.snapshots.get(id) else {
            return true;
        };
        let big =
            std::fs::metadata(path).is_ok_and(|m| m.len() > crate::safe_io::MAX_SESSION_FILE_BYTES);
        if !big {
            return true;
        }
        let Ok(meta) = session_files::read_snapshot_meta(path) else {
            return true; // reported when it is read
        };
        let entry = self.index.get(id);
        want(&SessionMeta {
            id: meta.session_id.unwrap_or_else(|| id.to_string()),
            source: meta
                .platform
                .or_else(|| entry.and_then(|e| e.platform.clone()))
                .unwrap_or_else(|| "unknown".to_string()),
            title: entry.and_then(|e| e.display_name.clone()),
            model: meta.model,
            started_at: None,
            end_reason: None,
            parent_id: None,
            parent_end_reason: None,
            listing: Default::default(),
        })
    }

    /// One session by id, from whichever store has it (a rotation child
    /// gives its whole lineage).
    pub fn load_session(&self, id: &str, report: &mut Report) -> Result<Option<Session>> {
        if let Some(db) = &self.state
            && let Some(head) = db.root_of(id)?
        {
            let mut s = db.load(&head, &mut |p| report.input_problem(p))?;
            self.enrich(&mut s, report)?;
            return Ok(Some(s));
        }
        if let Some(mut s) = self.response_sessions()?.into_iter().find(|s| s.id == id) {
            self.enrich(&mut s, report)?;
            return Ok(Some(s));
        }
        self.file_session(id, report)
    }

    fn response_sessions(&self) -> Result<Vec<Session>> {
        let Some(rs) = &self.responses else {
            return Ok(Vec::new());
        };
        let mut known = BTreeSet::new();
        for id in rs.responses.iter().filter_map(|r| r.session_id.as_deref()) {
            if self.in_db(id)? {
                known.insert(id);
            }
        }
        Ok(rs.sessions(&|id| known.contains(id)))
    }

    /// A session only the `sessions/` files hold.
    fn file_session(&self, id: &str, report: &mut Report) -> Result<Option<Session>> {
        let mut session = None;
        if let Some(path) = self.files.snapshots.get(id) {
            match session_files::read_snapshot(path) {
                Ok(s) => session = Some(s),
                Err(why) => report.input_problem(format!("{}: {why}", path.display()))?,
            }
        }
        if session.as_ref().is_none_or(|s| s.tools.is_none())
            && let Some(path) = self.files.transcripts.get(id)
            && let Some(t) = session_files::read_transcript(path, &mut |p| report.input_problem(p))?
        {
            match session.as_mut() {
                Some(s) => s.tools = t.tools,
                None => session = Some(t),
            }
        }
        let Some(mut s) = session else {
            return Ok(None);
        };
        if let Some(entry) = self.index.get(id) {
            if s.source == "unknown"
                && let Some(p) = &entry.platform
            {
                s.source = p.clone();
            }
            if s.title.is_none() {
                s.title = entry.display_name.clone();
            }
        }
        self.enrich(&mut s, report)?;
        Ok(Some(s))
    }

    /// Fills what the session's own store lacks: tool definitions and the
    /// system prompt from the session files, Responses `instructions`.
    fn enrich(&self, s: &mut Session, report: &mut Report) -> Result<()> {
        // A session read from the files has already had its files read.
        let from_files = matches!(s.origin, Some(Origin::SessionJson | Origin::Transcript));
        let before = (s.tools.is_some(), s.system_prompt.is_some());
        for id in s.lineage.clone() {
            if from_files {
                break;
            }
            if s.tools.is_some() && s.system_prompt.is_some() {
                break;
            }
            if let Some(path) = self.files.snapshots.get(&id) {
                let lost_turns = id == s.id
                    && s.resume_after.is_none()
                    && rebuild::starts_compacted(&s.messages);
                if lost_turns {
                    match session_files::read_snapshot(path) {
                        Ok(snap) => {
                            s.tools = s.tools.take().or(snap.tools);
                            s.system_prompt = s.system_prompt.take().or(snap.system_prompt);
                            // The store lost the turns before a compaction; the
                            // snapshot (which never shrinks) still has them, and
                            // the rebuild drops what both hold.
                            let mut rows = snap.messages;
                            rows.append(&mut s.messages);
                            s.messages = rows;
                        }
                        Err(why) => report.input_problem(format!("{}: {why}", path.display()))?,
                    }
                } else {
                    // Only the tools and the prompt: the messages are streamed past.
                    match session_files::read_snapshot_meta(path) {
                        Ok(meta) => {
                            s.tools = s.tools.take().or(meta.tools);
                            s.system_prompt = s.system_prompt.take().or(meta.system_prompt);
                        }
                        Err(why) => report.input_problem(format!("{}: {why}", path.display()))?,
                    }
                }
            }
            if s.tools.is_none()
                && let Some(path) = self.files.transcripts.get(&id)
                && let Some(t) =
                    session_files::read_transcript(path, &mut |p| report.input_problem(p))?
            {
                s.tools = t.tools;
            }
        }
        if !from_files && before != (s.tools.is_some(), s.system_prompt.is_some()) {
            report.enriched_session("sessions");
        }
        if s.instructions.is_none()
            && let Some(rs) = &self.responses
        {
            s.instructions = s
                .lineage
                .iter()
                .find_map(|id| rs.instructions_for(id))
                .map(str::to_string);
            if s.instructions.is_some() && s.origin != Some(Origin::ResponseStore) {
                report.enriched_session(Origin::ResponseStore.as_str());
            }
        }
        Ok(())
    }
}

/// The head of a session that did not come from state.db.
pub fn head_of(s: &Session) -> SessionMeta {
    SessionMeta {
        parent_end_reason: None,
        ..s.meta.clone()
    }
}

/// A message from a JSON file (`messages` of a snapshot, a transcript
/// line, a Responses history entry). `None` for non-conversation roles.
pub fn json_message(v: &Value) -> Option<Message> {
    let role = Role::parse(v.get("role")?.as_str()?)?;
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let timestamp = match v.get("timestamp") {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => session_files::iso_to_epoch(s),
        _ => None,
    };
    Some(Message {
        row_id: None,
        role,
        content: v
            .get("content")
            .map(content::value_text)
            .unwrap_or_default(),
        tool_calls: v
            .get("tool_calls")
            .and_then(content::parse_tool_calls)
            .unwrap_or_default(),
        tool_call_id: text("tool_call_id"),
        tool_name: text("tool_name").or_else(|| text("name")),
        reasoning: text("reasoning_content")
            .or_else(|| text("reasoning"))
            .filter(|s| !s.is_empty()),
        timestamp,
        finish_reason: text("finish_reason"),
        disposition: text("effect_disposition"),
        state: RowState::Live,
        summary_flag: v.get("_compressed_summary").and_then(Value::as_bool) == Some(true),
        oversize: false,
        uid: None,
        absorbed: Vec::new(),
    })
}
