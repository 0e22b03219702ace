//! Builds a Hermes home from a text capture (`fixtures/hermes-*/home`):
//! every `X.sql` becomes the SQLite database `X`, every other file is
//! copied. Used by the tests and the `fixture-home` example.

use std::path::Path;

use anyhow::{Context, Result};

pub fn materialize(src: &Path, dst: &Path) -> Result<()> {
    for entry in walkdir::WalkDir::new(src).sort_by_file_name() {
        let entry = entry?;
        let rel = entry.path().strip_prefix(src)?;
        let out = dst.join(rel);
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&out)?;
            continue;
        }
        match rel.to_str().and_then(|n| n.strip_suffix(".sql")) {
            Some(db_rel) => {
                let sql = std::fs::read_to_string(entry.path())
                    .with_context(|| format!("reading {}", entry.path().display()))?;
                let db = dst.join(db_rel);
                let _ = std::fs::remove_file(&db);
                let conn = rusqlite::Connection::open(&db)?;
                conn.execute_batch(&sql)
                    .with_context(|| format!("loading {}", entry.path().display()))?;
                conn.pragma_update(None, "journal_mode", "wal")?;
            }
            None => {
                std::fs::copy(entry.path(), &out)
                    .with_context(|| format!("copying {}", entry.path().display()))?;
            }
        }
    }
    Ok(())
}
