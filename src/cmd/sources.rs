//! `sources`: what is under HERMES_HOME, store by store.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use crate::config::SourcesConfig;
use crate::exit;
use crate::model::{Channel, Listed};
use crate::report::Report;
use crate::source::Stores;
use crate::source::state_db::StateDb;
use crate::time::iso_time;

/// `sources --json`: what is under the Hermes home.
#[derive(Debug, Serialize)]
pub struct SourcesDoc {
    pub hermes_home: String,
    pub profiles: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_db: Option<StateDbDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_store: Option<ResponseStoreDoc>,
    pub session_files: SessionFilesDoc,
    /// What the home lacks and how to fix it (e.g. tool definitions).
    pub notes: Vec<String>,
    /// The model Hermes serves (`config.yaml`) and its tokenizer in the
    /// local Hugging Face cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serving: Option<crate::tokens::hub::Serving>,
}

#[derive(Debug, Serialize)]
pub struct StateDbDoc {
    pub path: String,
    pub schema_version: Option<i64>,
    /// Set when the schema is newer than this tool knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_note: Option<String>,
    pub sessions: usize,
    pub messages: i64,
    pub channels: BTreeMap<&'static str, ChannelDoc>,
    pub sources: BTreeMap<String, usize>,
    /// Sessions per upstream model, the values `export --model` matches.
    pub models: BTreeMap<String, i64>,
    /// Sessions per listing flag set (v31 `hidden`, `archived`,
    /// `auto_archived`, `pinned`), the values `export --exclude` takes.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub listed: BTreeMap<&'static str, usize>,
    pub first: Option<String>,
    pub last: Option<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct ChannelDoc {
    pub sessions: usize,
    pub messages: i64,
}

#[derive(Debug, Serialize)]
pub struct ResponseStoreDoc {
    pub path: String,
    pub responses: usize,
    pub sessions: usize,
}

#[derive(Debug, Serialize)]
pub struct SessionFilesDoc {
    pub path: String,
    pub snapshots: usize,
    pub transcripts: usize,
    pub index: bool,
}

pub fn run(args: &SourcesConfig) -> Result<u8> {
    let home = args.home.resolve()?;
    let mut report = Report::new(false, false);
    let stores = Stores::open(&home, &mut report)?;
    let notes = snapshot_note(&stores, &home.dir).into_iter().collect();
    let doc = SourcesDoc {
        hermes_home: home.dir.display().to_string(),
        profiles: home.profiles(),
        state_db: stores
            .state
            .as_ref()
            .map(|db| state_db_doc(db, &args.nexus_prefix))
            .transpose()?,
        response_store: stores.responses.as_ref().map(|rs| ResponseStoreDoc {
            path: rs.path.display().to_string(),
            responses: rs.responses.len(),
            sessions: rs
                .responses
                .iter()
                .filter_map(|r| r.session_id.as_deref())
                .collect::<std::collections::BTreeSet<&str>>()
                .len(),
        }),
        session_files: SessionFilesDoc {
            path: stores.files.dir.display().to_string(),
            snapshots: stores.files.snapshots.len(),
            transcripts: stores.files.transcripts.len(),
            index: stores.files.index.is_some(),
        },
        notes,
        serving: crate::tokens::hub::Serving::of(&home.dir),
    };
    let mut out = crate::sink::Stdout::new();
    if args.json {
        out.line(serde_json::to_string_pretty(&doc)?.as_bytes())?;
    } else {
        // Stored source and model names may hold terminal escapes.
        let text: Vec<String> = render(&doc)
            .lines()
            .map(|l| crate::report::clean(l).into_owned())
            .collect();
        out.line(text.join("\n").as_bytes())?;
    }
    out.finish()?;
    Ok(if report.partial {
        exit::PARTIAL
    } else {
        exit::OK
    })
}

fn state_db_doc(db: &StateDb, nexus_prefix: &str) -> Result<StateDbDoc> {
    let stats = db.stats()?;
    let mut channels: BTreeMap<&'static str, ChannelDoc> = Channel::ALL
        .iter()
        .map(|c| (c.as_str(), ChannelDoc::default()))
        .collect();
    let mut sources: BTreeMap<String, usize> = BTreeMap::new();
    for (id, source, title, n) in &stats.sessions {
        let c = Channel::of(source, id, title.as_deref(), nexus_prefix);
        let e = channels.entry(c.as_str()).or_default();
        e.sessions += 1;
        e.messages += n;
        *sources.entry(source.clone()).or_default() += 1;
    }
    let time = |t| iso_time(t).as_str().map(str::to_owned);
    Ok(StateDbDoc {
        path: db.path.display().to_string(),
        schema_version: db.schema_version,
        schema_note: db.schema_note(),
        sessions: stats.sessions.len(),
        messages: stats.sessions.iter().map(|s| s.3).sum(),
        channels,
        sources,
        models: models(db.connection()),
        listed: listed(db)?,
        first: time(stats.first),
        last: time(stats.last),
    })
}

/// The `config.yaml` lines that turn Hermes's JSON session snapshots on.
const SNAPSHOTS_ON: &str = "    sessions:\n      write_json_snapshots: true";

/// Said when this Hermes keeps tool definitions only in JSON session
/// snapshots (its state.db has no `tool_names`) and none are written
/// (0.18 to 0.20 write none by default): exported tool calls then carry no
/// definition unless another store of the home has one.
fn snapshot_note(stores: &Stores, home: &std::path::Path) -> Option<String> {
    let db = stores.state.as_ref()?;
    if db.keeps_tool_sets() || !stores.files.snapshots.is_empty() {
        return None;
    }
    let settings = crate::hermes_settings::HermesSettings::read(home);
    let on = settings
        .config_value(&["sessions", "write_json_snapshots"])
        .is_some_and(|v| v == "true");
    if on {
        return None;
    }
    Some(format!(
        "tool definitions: this Hermes keeps them only in JSON session snapshots (state.db has no tool_names) and writes none, so exported tool calls lack definitions; to record them from now on, add to {}:\n{SNAPSHOTS_ON}",
        home.join("config.yaml").display()
    ))
}

fn render(doc: &SourcesDoc) -> String {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
    let mut out = format!("Hermes home  {}\n", doc.hermes_home);
    if !doc.profiles.is_empty() {
        out += &format!(
            "profiles     {} (select with --profile)\n",
            doc.profiles.join(", ")
        );
    }
    if let Some(db) = &doc.state_db {
        out += &format!(
            "\nstate.db           schema v{}  {} sessions  {} messages  {} .. {}\n",
            opt(db.schema_version.map(|v| v.to_string())),
            db.sessions,
            db.messages,
            opt(db.first.clone()),
            opt(db.last.clone())
        );
        for (name, c) in &db.channels {
            out += &format!(
                "  {name:<10} {:>7} sessions {:>9} messages\n",
                c.sessions, c.messages
            );
        }
        let list: Vec<String> = db.sources.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out += &format!("  sources    {}\n", list.join(" "));
        if !db.models.is_empty() {
            let list: Vec<String> = db.models.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out += &format!("  models     {} (select with --model)\n", list.join(" "));
        }
        if !db.listed.is_empty() {
            let list: Vec<String> = db.listed.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out += &format!(
                "  listed     {} (exported; leave out with --exclude)\n",
                list.join(" ")
            );
        }
    } else {
        out += "\nstate.db           not found\n";
    }
    if let Some(rs) = &doc.response_store {
        out += &format!(
            "response_store.db  {} responses in {} sessions\n",
            rs.responses, rs.sessions
        );
    } else {
        out += "response_store.db  not found\n";
    }
    let f = &doc.session_files;
    out += &format!(
        "sessions/          {} session_*.json, {} *.jsonl, sessions.json {}\n",
        f.snapshots,
        f.transcripts,
        if f.index { "present" } else { "absent" }
    );
    for note in &doc.notes {
        out += &format!("\nnote: {note}\n");
    }
    if let Some(s) = &doc.serving {
        out += &s.render();
    }
    out
}

/// Sessions per listing flag that is set on any (see [`StateDbDoc::listed`]).
fn listed(db: &StateDb) -> Result<BTreeMap<&'static str, usize>> {
    let mut out = BTreeMap::new();
    db.for_each_head(|h| {
        for flag in Listed::ALL.into_iter().filter(|f| h.listing.has(*f)) {
            *out.entry(flag.as_str()).or_default() += 1;
        }
        Ok(())
    })?;
    Ok(out)
}

/// Sessions per upstream model (`sessions.model`; `-` for sessions without
/// one), the values `export --model` matches.
fn models(db: &rusqlite::Connection) -> BTreeMap<String, i64> {
    let has_model = db
        .prepare("SELECT 1 FROM pragma_table_info('sessions') WHERE name = 'model'")
        .and_then(|mut st| st.exists([]))
        .unwrap_or(false);
    if !has_model {
        return BTreeMap::new();
    }
    let Ok(mut st) = db.prepare("SELECT COALESCE(model, '-'), COUNT(*) FROM sessions GROUP BY 1")
    else {
        return BTreeMap::new();
    };
    st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .map(|rows| rows.filter_map(|r| r.ok()).collect())
        .unwrap_or_default()
}
