//! Low-level output: stdout, and files replaced atomically.

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
    crate::safe_io::create_private_dir_all(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
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

/// JSONL on a stream (stdout, or a FIFO or device named by `--out`):
/// buffered, and quiet when the reader goes away (a broken pipe ends the
/// output, not the run; [`Stdout::finish`] then says the lines were not
/// all delivered).
pub struct Stdout {
    out: BufWriter<Accepted>,
    closed: bool,
    what: String,
    /// Bytes handed to the buffer, and where each line not yet known to
    /// be delivered ends.
    written: u64,
    ends: std::collections::VecDeque<u64>,
    delivered: u64,
}

/// A writer that counts the bytes the reader accepted.
struct Accepted {
    inner: Box<dyn Write>,
    bytes: u64,
}

impl Write for Accepted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Stdout {
    pub fn new() -> Stdout {
        Stdout::on(Box::new(io::stdout()), "stdout".to_string())
    }

    /// A stream into an already opened special file.
    pub fn on(out: Box<dyn Write>, what: String) -> Stdout {
        Stdout {
            out: BufWriter::with_capacity(
                1 << 16,
                Accepted {
                    inner: out,
                    bytes: 0,
                },
            ),
            closed: false,
            what,
            written: 0,
            ends: std::collections::VecDeque::new(),
            delivered: 0,
        }
    }

    /// Lines the reader has taken so far (all of them after a successful
    /// [`Stdout::finish`]; fewer when it closed the pipe first).
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    fn count_delivered(&mut self) {
        let accepted = self.out.get_ref().bytes;
        while self.ends.front().is_some_and(|e| *e <= accepted) {
            self.ends.pop_front();
            self.delivered += 1;
        }
    }

    /// Writes one line (a newline is added).
    pub fn line(&mut self, line: &[u8]) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        let result = self
            .out
            .write_all(line)
            .and_then(|_| self.out.write_all(b"\n"));
        self.written += line.len() as u64 + 1;
        self.ends.push_back(self.written);
        self.count_delivered();
        match result {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            other => other.with_context(|| format!("writing to {}", self.what)),
        }
    }

    /// Flushes. `Ok(true)` when every line reached the reader, `Ok(false)`
    /// when the reader closed the pipe first.
    pub fn finish(&mut self) -> Result<bool> {
        if self.closed {
            return Ok(false);
        }
        let flushed = self.out.flush();
        self.count_delivered();
        match flushed {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(e).with_context(|| format!("writing to {}", self.what)),
            Ok(()) => Ok(true),
        }
    }
}

impl Default for Stdout {
    fn default() -> Self {
        Stdout::new()
    }
}
