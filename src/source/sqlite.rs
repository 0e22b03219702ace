//! The one way a Hermes SQLite store is opened: read-only, never creating
//! it, waiting a while for a writer's lock.
//!
//! Opening a WAL store read-only still makes SQLite create its `-wal` and
//! `-shm` files beside it. A dry run promises to write nothing, so it opens
//! a store that no one has open (neither side file exists) as an immutable
//! file, which creates nothing; a store in use is opened normally, since
//! only SQLite's shared memory makes a live writer's pages visible.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
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

static NO_SIDE_FILES: AtomicBool = AtomicBool::new(false);

/// Asks that stores be opened without creating side files where that is
/// safe (`--dry-run`; see the module comment).
pub fn create_no_side_files(on: bool) {
    NO_SIDE_FILES.store(on, Ordering::Relaxed);
}

/// Whether `path` has no `-wal` and no `-shm` beside it.
fn idle(path: &Path) -> bool {
    ["-wal", "-shm"].iter().all(|side| {
        let mut name = path.as_os_str().to_owned();
        name.push(side);
        std::fs::symlink_metadata(std::path::PathBuf::from(name)).is_err()
    })
}

/// Opens `path` read-only (errors name the file).
pub fn open_read_only(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = if NO_SIDE_FILES.load(Ordering::Relaxed) && idle(path) {
        let abs = crate::safe_io::absolute(path);
        let mut uri = String::from("file:");
        for b in abs.to_string_lossy().bytes() {
            match b {
                b'%' | b'?' | b'#' | 0x80..=0xFF => uri.push_str(&format!("%{b:02X}")),
                _ => uri.push(b as char),
            }
        }
        uri.push_str("?immutable=1");
        Connection::open_with_flags(&uri, flags)
    } else {
        Connection::open_with_flags(path, flags)
    }
    .with_context(|| format!("{}: cannot open as SQLite", path.display()))?;
    conn.busy_timeout(busy_timeout())?;
    Ok(conn)
}
