//! Incremental-run state (`--state FILE`) and the lock that keeps two runs
//! from interleaving.
//!
//! The state file is the commit point of a run: outputs are written and
//! renamed into place first, then the state is replaced atomically. It
//! records the byte length of every cumulative output file as committed,
//! so a run killed after renaming an output but before saving the state
//! is undone (the file is cut back) by the next run.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::exit::{self, Failure};
use crate::sink::{persist, temp_beside};

pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunState {
    pub version: u32,
    /// Highest `state.db` message id covered by committed runs.
    pub watermark: i64,
    /// Sessions without row ids (response store, session files): how many
    /// exchanges of each were already covered.
    #[serde(default)]
    pub covered_exchanges: BTreeMap<String, usize>,
    /// Committed byte length of each cumulative output file (by file name).
    #[serde(default)]
    pub output_bytes: BTreeMap<String, u64>,
    /// Committed line count of each cumulative output file.
    #[serde(default)]
    pub output_lines: BTreeMap<String, u64>,
    /// Sessions moved to valid.jsonl to give it a full batch; they stay there.
    #[serde(default)]
    pub forced_valid: Vec<String>,
    /// Successful runs so far.
    #[serde(default)]
    pub runs: u64,
}

impl RunState {
    pub fn load(path: &Path) -> Result<RunState> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(RunState {
                    version: STATE_VERSION,
                    ..RunState::default()
                });
            }
            Err(e) => {
                return Err(e).with_context(|| format!("reading state file {}", path.display()));
            }
        };
        let state: RunState = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "state file {} is not valid; move it away to start over (everything will be exported again)",
                path.display()
            )
        })?;
        if state.version != STATE_VERSION {
            bail!(
                "state file {} has version {}, this tool writes {STATE_VERSION}",
                path.display(),
                state.version
            );
        }
        Ok(state)
    }

    /// Replaces the state file atomically (owner-only permissions).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tmp = temp_beside(path)?;
        serde_json::to_writer_pretty(&mut tmp, self)?;
        tmp.write_all(b"\n")?;
        persist(tmp, path)
    }
}

/// An exclusive lock held for the whole run; released when dropped or when
/// the process dies.
pub struct RunLock {
    _file: File,
    pub path: PathBuf,
}

impl RunLock {
    /// Takes `<target>.lock`, or fails at once with exit code LOCKED.
    pub fn acquire(target: &Path) -> Result<RunLock> {
        let mut name = target.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut file = opts
            .open(&path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                return Err(Failure::new(
                    exit::LOCKED,
                    format!(
                        "another run holds {}{}; wait for it to finish (or check that it is not stuck)",
                        path.display(),
                        if holder.is_empty() {
                            String::new()
                        } else {
                            format!(" (pid {holder})")
                        }
                    ),
                )
                .into());
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
        file.set_len(0)?;
        write!(file, "{}", std::process::id())?;
        Ok(RunLock { _file: file, path })
    }
}
