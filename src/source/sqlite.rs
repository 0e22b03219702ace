//! The one way a Hermes SQLite store is opened: read-only, never creating
//! it, waiting a while for a writer's lock.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use rusqlite::{Connection, OpenFlags};

/// How long to wait for a writer's lock: 10 s, or
/// `HERMES_HARVEST_BUSY_TIMEOUT_MS` (tests use a short one).
pub fn busy_timeout() -> Duration {
    std::env::var("HERMES_HARVEST_BUSY_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(10), Duration::from_millis)
}

/// Opens `path` read-only (errors name the file).
pub fn open_read_only(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)
        .with_context(|| format!("{}: cannot open as SQLite", path.display()))?;
    conn.busy_timeout(busy_timeout())?;
    Ok(conn)
}
