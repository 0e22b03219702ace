//! Where lines go: stdout, or a file replaced atomically.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tempfile::NamedTempFile;

fn partial_prefix(target: &Path) -> String {
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    format!(".hermes-harvest-partial-{name}.")
}

fn dir_of(target: &Path) -> PathBuf {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates a temporary file next to `target` (so it can be renamed over
/// it), readable by the owner only.
pub fn temp_beside(target: &Path) -> Result<NamedTempFile> {
    let dir = dir_of(target);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(&partial_prefix(target))
        .tempfile_in(&dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    Ok(tmp)
}

/// Removes temporary files a killed run left for `target`. Call it only
/// while holding the run lock, so no live run owns them.
pub fn remove_stale_partials(target: &Path) {
    let prefix = partial_prefix(target);
    let Ok(entries) = std::fs::read_dir(dir_of(target)) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix))
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Flushes, fsyncs and renames a temporary file over `target`, then syncs
/// the directory so the rename itself is durable.
pub fn persist(tmp: NamedTempFile, target: &Path) -> Result<()> {
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("syncing {}", target.display()))?;
    tmp.persist(target)
        .with_context(|| format!("replacing {}", target.display()))?;
    sync_dir(target);
    Ok(())
}

/// Syncs the directory holding `target`, so a rename or a new file in it
/// is durable.
pub fn sync_dir(target: &Path) {
    if let Ok(d) = File::open(dir_of(target)) {
        let _ = d.sync_all();
    }
}

/// A JSONL destination.
pub enum Sink {
    Stdout {
        out: BufWriter<io::Stdout>,
        /// The reader went away: stop writing, exit quietly.
        closed: bool,
    },
    File {
        out: BufWriter<NamedTempFile>,
        target: PathBuf,
    },
}

impl Sink {
    pub fn stdout() -> Sink {
        Sink::Stdout {
            out: BufWriter::with_capacity(1 << 16, io::stdout()),
            closed: false,
        }
    }

    pub fn file(target: &Path) -> Result<Sink> {
        Ok(Sink::File {
            out: BufWriter::with_capacity(1 << 16, temp_beside(target)?),
            target: target.to_path_buf(),
        })
    }

    /// Writes one line (a newline is added).
    pub fn line(&mut self, line: &[u8]) -> Result<()> {
        match self {
            Sink::Stdout { out, closed } => {
                if *closed {
                    return Ok(());
                }
                if let Err(e) = out.write_all(line).and_then(|_| out.write_all(b"\n")) {
                    if e.kind() == io::ErrorKind::BrokenPipe {
                        *closed = true;
                        return Ok(());
                    }
                    return Err(e).context("writing to stdout");
                }
                Ok(())
            }
            Sink::File { out, target } => out
                .write_all(line)
                .and_then(|_| out.write_all(b"\n"))
                .with_context(|| format!("writing {}", target.display())),
        }
    }

    /// Makes the output final: flushes stdout, or puts the file in place.
    pub fn finish(self) -> Result<()> {
        match self {
            Sink::Stdout { mut out, closed } => {
                if closed {
                    return Ok(());
                }
                match out.flush() {
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
                    other => other.context("writing to stdout"),
                }
            }
            Sink::File { out, target } => {
                let tmp = out
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .with_context(|| format!("writing {}", target.display()))?;
                persist(tmp, &target)
            }
        }
    }
}
