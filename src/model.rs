//! The normalised conversation model every source converts into.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    /// Maps a stored role; `None` for bookkeeping rows (`session_meta`,
    /// `system`) that are not part of the conversation.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            "tool" => Some(Role::Tool),
            _ => None,
        }
    }
}

/// What happened to a stored row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowState {
    /// Part of the live transcript (`active = 1`).
    Live,
    /// Archived by in-place context compaction (`active = 0, compacted = 1`):
    /// still an original turn.
    Compacted,
    /// Taken back with `/undo` (`active = 0, compacted = 0`).
    Undone,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// Parsed arguments: a JSON object when the stored string parses as
    /// one, otherwise the raw string.
    pub arguments: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// `messages.id` in state.db, when the message came from there.
    pub row_id: Option<i64>,
    pub role: Role,
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub tool_call_id: Option<String>,
    pub tool_name: Option<String>,
    pub reasoning: Option<String>,
    /// Epoch seconds.
    pub timestamp: Option<f64>,
    pub finish_reason: Option<String>,
    /// `effect_disposition` (e.g. `denied`) on tool rows.
    pub disposition: Option<String>,
    pub state: RowState,
    /// The store flags this row as a compaction summary (v30
    /// `_compressed_summary`); older stores are recognised by its text.
    pub summary_flag: bool,
    /// The stored text was larger than any sample can hold and was not
    /// read (`content` is a placeholder).
    pub oversize: bool,
    /// The turn this row belongs to (v31 `message_uid`): compaction clones,
    /// a summary that carries a turn, and the rewound original share it.
    pub uid: Option<String>,
    /// The turns merged into this composite row (v31
    /// `absorbed_message_uids`).
    pub absorbed: Vec<String>,
}

/// The first state.db row id of a turn's messages: the turn's key in the
/// state (`None` for a turn of another store, whose rows have no ids).
pub fn turn_key(msgs: &[Message]) -> Option<i64> {
    msgs.iter().find_map(|m| m.row_id)
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            row_id: None,
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            tool_name: None,
            reasoning: None,
            timestamp: None,
            finish_reason: None,
            disposition: None,
            state: RowState::Live,
            summary_flag: false,
            oversize: false,
            uid: None,
            absorbed: Vec::new(),
        }
    }

    /// True when two rows carry the same turn (compaction copies keep role,
    /// content and calls but get new ids and sometimes new timestamps).
    pub fn same_turn(&self, other: &Message) -> bool {
        self.role == other.role
            && self.content == other.content
            && self.tool_call_id == other.tool_call_id
            && self.tool_calls == other.tool_calls
    }

    /// An assistant message that ends a turn: text, no pending calls.
    pub fn is_final_answer(&self) -> bool {
        self.role == Role::Assistant
            && self.tool_calls.is_empty()
            && !self.content.trim().is_empty()
    }
}

/// Which store a session was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    StateDb,
    ResponseStore,
    SessionJson,
    Transcript,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::StateDb => "state.db",
            Origin::ResponseStore => "response_store.db",
            Origin::SessionJson => "session_json",
            Origin::Transcript => "session_jsonl",
        }
    }
}

/// One session (or one compression lineage) with its rows in stored order.
/// A session row without its messages: the one model of a session that
/// selection works on, whichever store it came from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionMeta {
    pub id: String,
    /// `sessions.source` (or the file's `platform` when no DB row exists).
    pub source: String,
    pub title: Option<String>,
    pub model: Option<String>,
    pub started_at: Option<f64>,
    pub end_reason: Option<String>,
    pub parent_id: Option<String>,
    /// `end_reason` of the parent row, when the parent exists (state.db).
    pub parent_end_reason: Option<String>,
    /// The listing flags set on the session row (state.db v31).
    pub listing: Listing,
}

/// Listing flags of a v31 `sessions` row: set by the desktop app (`hidden`,
/// `archived`, `pinned`, through `PATCH /api/sessions/{id}`) or by the idle
/// sweep (`auto_archived`). Stores without the columns read all false.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Listing {
    pub hidden: bool,
    pub archived: bool,
    pub auto_archived: bool,
    pub pinned: bool,
}

/// A listing flag `export --exclude` can leave sessions out by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Listed {
    Hidden,
    Archived,
    AutoArchived,
    Pinned,
}

impl Listed {
    pub const ALL: [Listed; 4] = [
        Listed::Hidden,
        Listed::Archived,
        Listed::AutoArchived,
        Listed::Pinned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Listed::Hidden => "hidden",
            Listed::Archived => "archived",
            Listed::AutoArchived => "auto-archived",
            Listed::Pinned => "pinned",
        }
    }
}

impl Listing {
    /// Whether the flag is set.
    pub fn has(self, flag: Listed) -> bool {
        match flag {
            Listed::Hidden => self.hidden,
            Listed::Archived => self.archived,
            Listed::AutoArchived => self.auto_archived,
            Listed::Pinned => self.pinned,
        }
    }
}

impl SessionMeta {
    /// A child created by compression rotation: exported with its root.
    pub fn is_rotation_child(&self) -> bool {
        self.parent_end_reason.as_deref() == Some("compression")
    }
}

#[derive(Debug, Clone, Default)]
pub struct Session {
    /// Who and where: what selection looks at before any message is read.
    pub meta: SessionMeta,
    /// Hermes's stored system prompt.
    pub system_prompt: Option<String>,
    /// Responses-API `instructions` (the client's system prompt), if known.
    pub instructions: Option<String>,
    /// Tool definitions, if a session file recorded them.
    pub tools: Option<Vec<Value>>,
    /// Ids of the sessions merged into this one (compression rotation).
    pub lineage: Vec<String>,
    pub origin: Option<Origin>,
    pub messages: Vec<Message>,
    /// A later part of a very long session: its rows up to this id were in
    /// the previous part and are here only as context.
    pub resume_after: Option<i64>,
}

impl std::ops::Deref for Session {
    type Target = SessionMeta;

    fn deref(&self) -> &SessionMeta {
        &self.meta
    }
}

impl std::ops::DerefMut for Session {
    fn deref_mut(&mut self) -> &mut SessionMeta {
        &mut self.meta
    }
}

/// Where a conversation happened: `telegram` (`source = 'telegram'`),
/// `tui` (`cli`, `tui` or `oneshot`), `nexus` (`source = 'nexus'`, an
/// API-server session whose id has the Nexus prefix, or a session of another
/// source whose title starts with "nexus", any case), and `other` for
/// everything else. The telegram and tui sources win over a title.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Channel {
    Nexus,
    Telegram,
    Tui,
    Other,
}

impl Channel {
    pub const ALL: [Channel; 4] = [
        Channel::Nexus,
        Channel::Telegram,
        Channel::Tui,
        Channel::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Nexus => "nexus",
            Channel::Telegram => "telegram",
            Channel::Tui => "tui",
            Channel::Other => "other",
        }
    }

    pub fn of(source: &str, id: &str, title: Option<&str>, nexus_prefix: &str) -> Channel {
        let titled_nexus = title.is_some_and(|t| {
            t.get(..5)
                .is_some_and(|head| head.eq_ignore_ascii_case("nexus"))
        });
        match source {
            "telegram" => Channel::Telegram,
            // 0.22 stores a `hermes chat -q` one-shot as `oneshot`.
            "cli" | "tui" | "oneshot" => Channel::Tui,
            "nexus" => Channel::Nexus,
            "api_server" if !nexus_prefix.is_empty() && id.starts_with(nexus_prefix) => {
                Channel::Nexus
            }
            _ if titled_nexus => Channel::Nexus,
            _ => Channel::Other,
        }
    }
}

/// The name of a tool definition (`{"type":"function","function":{"name"}}`
/// or a bare `{"name"}`).
pub fn tool_name(def: &serde_json::Value) -> Option<&str> {
    def.get("function")
        .and_then(|f| f.get("name"))
        .or_else(|| def.get("name"))
        .and_then(serde_json::Value::as_str)
}
