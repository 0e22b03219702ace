//! `sources`: what is under HERMES_HOME, store by store.

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::{Value, json};

use crate::cli::SourcesArgs;
use crate::config::iso_time;
use crate::exit;
use crate::home::HermesHome;
use crate::model::Channel;
use crate::report::Report;
use crate::source::Stores;

pub fn run(args: &SourcesArgs) -> Result<u8> {
    let home = HermesHome::resolve(&args.home)?;
    let mut report = Report::new(false, false);
    let stores = Stores::open(&home, &mut report)?;
    let mut doc = serde_json::Map::new();
    doc.insert("hermes_home".into(), json!(home.dir.display().to_string()));
    let profiles = home.profiles();
    doc.insert("profiles".into(), json!(profiles));

    if let Some(db) = &stores.state {
        let stats = db.stats()?;
        let mut per: BTreeMap<&str, (usize, i64)> =
            Channel::ALL.iter().map(|c| (c.as_str(), (0, 0))).collect();
        let mut per_source: BTreeMap<String, usize> = BTreeMap::new();
        for (id, source, title, n) in &stats.sessions {
            let c = Channel::of(source, id, title.as_deref(), &args.nexus_prefix);
            let e = per.entry(c.as_str()).or_default();
            e.0 += 1;
            e.1 += n;
            *per_source.entry(source.clone()).or_default() += 1;
        }
        doc.insert(
            "state_db".into(),
            json!({
                "path": db.path.display().to_string(),
                "schema_version": db.schema_version,
                "sessions": stats.sessions.len(),
                "messages": stats.sessions.iter().map(|s| s.3).sum::<i64>(),
                "channels": per.iter().map(|(c, (s, m))| (c.to_string(), json!({"sessions": s, "messages": m}))).collect::<serde_json::Map<_, _>>(),
                "sources": per_source,
                "models": models(db.connection()),
                "first": iso_time(stats.first),
                "last": iso_time(stats.last),
            }),
        );
    }
    if let Some(rs) = &stores.responses {
        let sessions: std::collections::BTreeSet<&str> = rs
            .responses
            .iter()
            .filter_map(|r| r.session_id.as_deref())
            .collect();
        doc.insert(
            "response_store".into(),
            json!({
                "path": rs.path.display().to_string(),
                "responses": rs.responses.len(),
                "sessions": sessions.len(),
            }),
        );
    }
    doc.insert(
        "session_files".into(),
        json!({
            "path": stores.files.dir.display().to_string(),
            "snapshots": stores.files.snapshots.len(),
            "transcripts": stores.files.transcripts.len(),
            "index": stores.files.index.is_some(),
        }),
    );
    let doc = Value::Object(doc);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", render(&doc));
    }
    Ok(if report.partial {
        exit::PARTIAL
    } else {
        exit::OK
    })
}

fn render(doc: &Value) -> String {
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let mut out = format!("Hermes home  {}\n", s(&doc["hermes_home"]));
    if let Some(p) = doc["profiles"].as_array().filter(|p| !p.is_empty()) {
        let names: Vec<String> = p.iter().map(s).collect();
        out += &format!(
            "profiles     {} (select with --profile)\n",
            names.join(", ")
        );
    }
    let db = &doc["state_db"];
    if db.is_object() {
        out += &format!(
            "\nstate.db           schema v{}  {} sessions  {} messages  {} .. {}\n",
            s(&db["schema_version"]),
            s(&db["sessions"]),
            s(&db["messages"]),
            s(&db["first"]),
            s(&db["last"])
        );
        if let Some(ch) = db["channels"].as_object() {
            for (name, c) in ch {
                out += &format!(
                    "  {name:<10} {:>7} sessions {:>9} messages\n",
                    s(&c["sessions"]),
                    s(&c["messages"])
                );
            }
        }
        if let Some(src) = db["sources"].as_object() {
            let list: Vec<String> = src.iter().map(|(k, v)| format!("{k}={}", s(v))).collect();
            out += &format!("  sources    {}\n", list.join(" "));
        }
        if let Some(m) = db["models"].as_object().filter(|m| !m.is_empty()) {
            let list: Vec<String> = m.iter().map(|(k, v)| format!("{k}={}", s(v))).collect();
            out += &format!("  models     {} (select with --model)\n", list.join(" "));
        }
    } else {
        out += "\nstate.db           not found\n";
    }
    let rs = &doc["response_store"];
    if rs.is_object() {
        out += &format!(
            "response_store.db  {} responses in {} sessions\n",
            s(&rs["responses"]),
            s(&rs["sessions"])
        );
    } else {
        out += "response_store.db  not found\n";
    }
    let f = &doc["session_files"];
    out += &format!(
        "sessions/          {} session_*.json, {} *.jsonl, sessions.json {}\n",
        s(&f["snapshots"]),
        s(&f["transcripts"]),
        if f["index"] == Value::Bool(true) {
            "present"
        } else {
            "absent"
        }
    );
    out
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
