//! Reader for the `sessions/` folder: `session_<id>.json` snapshots,
//! legacy `<id>.jsonl` transcripts and the `sessions.json` routing index.
//!
//! `request_dump_*` files are never opened (they hold raw request headers),
//! and links that lead out of HERMES_HOME are not followed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::model::{Origin, Session, SessionMeta};
use crate::safe_io::{self, MAX_SESSION_FILE_BYTES};
use crate::source::json_message;

fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    safe_io::read_regular(path, MAX_SESSION_FILE_BYTES).map_err(|e| format!("cannot read: {e}"))
}

/// What enrichment needs from a snapshot: its tools and system prompt. The
/// messages are skipped while streaming, so a huge snapshot costs no memory.
#[derive(Debug, Default)]
pub struct SnapshotMeta {
    pub system_prompt: Option<String>,
    pub tools: Option<Vec<Value>>,
    pub session_id: Option<String>,
    pub platform: Option<String>,
    pub model: Option<String>,
}

/// Reads a snapshot's tools and system prompt without keeping its messages.
pub fn read_snapshot_meta(path: &Path) -> Result<SnapshotMeta, String> {
    #[derive(serde::Deserialize)]
    struct Raw {
        #[serde(default)]
        system_prompt: Option<Value>,
        #[serde(default)]
        tools: Option<Value>,
        #[serde(default)]
        session_id: Option<Value>,
        #[serde(default)]
        platform: Option<Value>,
        #[serde(default)]
        model: Option<Value>,
        #[serde(default)]
        #[allow(dead_code)]
        messages: Option<serde::de::IgnoredAny>,
    }
    let file = safe_io::open_regular(path, u64::MAX).map_err(|e| format!("cannot read: {e}"))?;
    let raw: Raw = serde_json::from_reader(std::io::BufReader::with_capacity(1 << 16, file))
        .map_err(|e| format!("not valid JSON: {e}"))?;
    Ok(SnapshotMeta {
        system_prompt: str_field(raw.system_prompt.as_ref()),
        tools: tools_field(raw.tools.as_ref()),
        session_id: str_field(raw.session_id.as_ref()),
        platform: str_field(raw.platform.as_ref()),
        model: str_field(raw.model.as_ref()),
    })
}

/// What the folder holds, by file name only (nothing is parsed yet).
#[derive(Debug, Default)]
pub struct SessionFiles {
    pub dir: PathBuf,
    /// session id → `session_<id>.json`
    pub snapshots: BTreeMap<String, PathBuf>,
    /// session id → `<id>.jsonl`
    pub transcripts: BTreeMap<String, PathBuf>,
    /// `sessions.json`, if present.
    pub index: Option<PathBuf>,
}

/// Tool definitions by name from the home's session snapshots, for
/// sessions that call a tool they did not record a definition of. Files
/// are read lazily, in reverse id order, and at most [`CATALOG_FILES`] of
/// them; a name takes the definition of the first file that has it, so
/// the answer does not depend on what was asked before.
#[derive(Debug, Default, Clone)]
pub struct ToolCatalog {
    files: Vec<PathBuf>,
    read: usize,
    defs: BTreeMap<String, Value>,
}

/// Snapshot files read for the catalog at most.
pub const CATALOG_FILES: usize = 256;

impl ToolCatalog {
    pub fn new(files: &SessionFiles) -> ToolCatalog {
        ToolCatalog {
            files: files
                .snapshots
                .values()
                .rev()
                .take(CATALOG_FILES)
                .cloned()
                .collect(),
            read: 0,
            defs: BTreeMap::new(),
        }
    }

    /// Adds tool sets read elsewhere (state.db's, newest Hermes version
    /// first); a name keeps the first definition it was given.
    pub fn add_sets(&mut self, sets: Vec<Vec<Value>>) {
        for def in sets.into_iter().flatten() {
            if let Some(n) = crate::model::tool_name(&def) {
                self.defs.entry(n.to_string()).or_insert(def);
            }
        }
    }

    pub fn get(&mut self, name: &str) -> Option<Value> {
        while !self.defs.contains_key(name) && self.read < self.files.len() {
            let path = &self.files[self.read];
            self.read += 1;
            let Ok(session) = read_snapshot(path) else {
                continue;
            };
            for def in session.tools.into_iter().flatten() {
                if let Some(n) = crate::model::tool_name(&def) {
                    self.defs.entry(n.to_string()).or_insert(def);
                }
            }
        }
        self.defs.get(name).cloned()
    }
}

/// Routing-index facts about a session (messaging platforms only).
#[derive(Debug, Clone, Default)]
pub struct IndexEntry {
    pub platform: Option<String>,
    pub display_name: Option<String>,
}

impl SessionFiles {
    /// Lists `dir` (one level, sorted). A missing folder is an empty one.
    pub fn scan(dir: &Path, home: &Path) -> Result<SessionFiles> {
        let mut files = SessionFiles {
            dir: dir.to_path_buf(),
            ..SessionFiles::default()
        };
        if !dir.is_dir() {
            return Ok(files);
        }
        let home_real = home.canonicalize().unwrap_or_else(|_| home.to_path_buf());
        let entries = walkdir::WalkDir::new(dir)
            .min_depth(1)
            .max_depth(1)
            .sort_by_file_name();
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str() else {
                continue;
            };
            if name.starts_with("request_dump_") || name.starts_with('.') {
                continue;
            }
            // A link is followed inside the home only; a FIFO or device (or
            // a link to one) stays listed, so that reading it reports it.
            if entry.path_is_symlink() {
                match path.canonicalize() {
                    Ok(real) if real.starts_with(&home_real) && real.is_file() => {}
                    Ok(real) if !real.is_file() && !real.is_dir() => {}
                    _ => continue,
                }
            } else if entry.file_type().is_dir() {
                continue;
            }
            if name == "sessions.json" {
                files.index = Some(path.to_path_buf());
            } else if let Some(id) = name
                .strip_prefix("session_")
                .and_then(|n| n.strip_suffix(".json"))
            {
                files.snapshots.insert(id.to_string(), path.to_path_buf());
            } else if let Some(id) = name.strip_suffix(".jsonl") {
                files.transcripts.insert(id.to_string(), path.to_path_buf());
            }
        }
        Ok(files)
    }

    pub fn is_empty(&self) -> bool {
        self.snapshots.is_empty() && self.transcripts.is_empty() && self.index.is_none()
    }
}

/// Reads and parses a `session_<id>.json` snapshot (a regular file of at
/// most [`MAX_SESSION_FILE_BYTES`]).
pub fn read_snapshot(path: &Path) -> Result<Session, String> {
    let bytes = read_limited(path)?;
    let fallback = id_from_name(path, "session_", ".json");
    parse_snapshot(&bytes, fallback.as_deref())
}

/// Parses the bytes of a snapshot; `fallback_id` (from the file name) is
/// used when the JSON names no session.
pub fn parse_snapshot(bytes: &[u8], fallback_id: Option<&str>) -> Result<Session, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let id = obj
        .get("session_id")
        .and_then(Value::as_str)
        .or(fallback_id)
        .map(str::to_string)
        .ok_or("no session_id")?;
    let messages = match obj.get("messages") {
        Some(Value::Array(items)) => items.iter().filter_map(json_message).collect(),
        _ => return Err("no messages list".to_string()),
    };
    Ok(Session {
        meta: SessionMeta {
            id: id.clone(),
            source: str_field(obj.get("platform")).unwrap_or_else(|| "unknown".to_string()),
            model: str_field(obj.get("model")),
            started_at: obj
                .get("session_start")
                .and_then(Value::as_str)
                .and_then(iso_to_epoch),
            ..SessionMeta::default()
        },
        system_prompt: str_field(obj.get("system_prompt")),
        tools: tools_field(obj.get("tools")),
        origin: Some(Origin::SessionJson),
        lineage: vec![id],
        messages,
        ..Session::default()
    })
}

/// Reads and parses a legacy `<id>.jsonl` transcript. A line that is not
/// JSON goes to `on_problem` (with its line number) and the rest is still
/// read.
pub fn read_transcript(
    path: &Path,
    on_problem: &mut dyn FnMut(String) -> Result<()>,
) -> Result<Option<Session>> {
    let bytes = match read_limited(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            on_problem(format!("{}: {e}", path.display()))?;
            return Ok(None);
        }
    };
    let id = id_from_name(path, "", ".jsonl").unwrap_or_default();
    parse_transcript(&bytes, &id, &mut |line, why| {
        on_problem(format!("{}:{line}: {why}", path.display()))
    })
    .map(Some)
}

/// Parses the bytes of a transcript; `on_bad_line(line number, why)`.
pub fn parse_transcript(
    bytes: &[u8],
    id: &str,
    on_bad_line: &mut dyn FnMut(usize, String) -> Result<()>,
) -> Result<Session> {
    let text = String::from_utf8_lossy(bytes);
    let mut session = Session {
        meta: SessionMeta {
            id: id.to_string(),
            source: "unknown".to_string(),
            ..SessionMeta::default()
        },
        origin: Some(Origin::Transcript),
        lineage: vec![id.to_string()],
        ..Session::default()
    };
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                on_bad_line(n + 1, format!("not valid JSON: {e}"))?;
                continue;
            }
        };
        if v.get("role").and_then(Value::as_str) == Some("session_meta") {
            if session.tools.is_none() {
                session.tools = tools_field(v.get("tools"));
            }
            if let Some(p) = str_field(v.get("platform")) {
                session.source = p;
            }
            session.meta.model = session
                .meta
                .model
                .take()
                .or_else(|| str_field(v.get("model")));
            continue;
        }
        if let Some(m) = json_message(&v) {
            if session.started_at.is_none() {
                session.started_at = m.timestamp;
            }
            session.messages.push(m);
        }
    }
    Ok(session)
}

/// Reads `sessions.json`: session id → platform facts. Keys starting with
/// `_` are sentinels (`_README`).
pub fn read_index(path: &Path) -> Result<BTreeMap<String, IndexEntry>, String> {
    let bytes = read_limited(path)?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("not valid JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let mut out = BTreeMap::new();
    for (key, entry) in obj {
        if key.starts_with('_') {
            continue;
        }
        let Some(id) = entry.get("session_id").and_then(Value::as_str) else {
            continue;
        };
        out.insert(
            id.to_string(),
            IndexEntry {
                platform: str_field(entry.get("platform")),
                display_name: str_field(entry.get("display_name")),
            },
        );
    }
    Ok(out)
}

fn id_from_name(path: &Path, prefix: &str, suffix: &str) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    Some(name.strip_prefix(prefix)?.strip_suffix(suffix)?.to_string())
}

fn str_field(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn tools_field(v: Option<&Value>) -> Option<Vec<Value>> {
    match v {
        Some(Value::Array(list)) if !list.is_empty() => Some(list.clone()),
        _ => None,
    }
}

/// Session-file times are local ISO strings without a zone; they are read
/// as UTC, which is only used for ordering and `--since` on file-only
/// sessions.
pub fn iso_to_epoch(s: &str) -> Option<f64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros() as f64 / 1e6);
    }
    let naive = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
    Some(naive.and_utc().timestamp_micros() as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times() {
        assert_eq!(iso_to_epoch("1970-01-01T00:00:01.5"), Some(1.5));
        assert!(iso_to_epoch("yesterday").is_none());
    }

    #[test]
    fn transcript_keeps_going_after_a_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc.jsonl");
        std::fs::write(
            &path,
            "{\"role\":\"session_meta\",\"platform\":\"telegram\",\"tools\":[{\"type\":\"function\"}]}\n{\"role\":\"user\",\"content\":\"hi\"}\n{\"role\":\"assis\n{\"role\":\"assistant\",\"content\":\"yo\"}\n",
        )
        .unwrap();
        let mut problems = Vec::new();
        let s = read_transcript(&path, &mut |p| {
            problems.push(p);
            Ok(())
        })
        .unwrap()
        .unwrap();
        assert_eq!(s.source, "telegram");
        assert_eq!(s.messages.len(), 2);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("abc.jsonl:3"));
        assert!(s.tools.is_some());
    }
}
