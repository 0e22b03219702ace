//! The run lock: one run at a time per state file (or per output).
//!
//! The lock is `<target>.lock`, held with `flock` for the whole run and
//! released when the process ends, however it ends. It records who holds
//! it (pid, start time, command), so that exit 5 can name the process that
//! is in the way and since when. A lock whose file is removed when the run
//! ends (a one-shot `--out FILE`) is safe because every taker checks, once
//! it holds the lock, that the path still names the file it locked.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::exit::{self, Failure};

/// An exclusive lock held for the whole run; released when dropped or when
/// the process dies.
pub struct RunLock {
    file: File,
    pub path: PathBuf,
    /// Remove the file when the run ends (nothing else keeps it).
    remove: bool,
}

/// The lock file of `target`.
pub fn lock_path(target: &Path) -> PathBuf {
    let mut name = target.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl RunLock {
    /// Takes `<target>.lock`, or fails at once with exit code LOCKED. The
    /// file stays, for the next run of the same job.
    pub fn acquire(target: &Path) -> Result<RunLock> {
        Self::take(target, false)
    }

    /// Like [`RunLock::acquire`], but the lock file is removed when the run
    /// ends (a one-shot output leaves nothing behind).
    pub fn acquire_once(target: &Path) -> Result<RunLock> {
        Self::take(target, true)
    }

    fn take(target: &Path, remove: bool) -> Result<RunLock> {
        let path = lock_path(target);
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::safe_io::create_private_dir_all(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        // A run that removes its lock file may do so between our open and
        // our lock: then we hold a file nobody else sees, and try again.
        for _ in 0..8 {
            let file = open_and_lock(&path)?;
            if still_named(&file, &path) {
                let mut lock = RunLock { file, path, remove };
                lock.record()?;
                return Ok(lock);
            }
        }
        anyhow::bail!("{}: the lock file keeps being replaced", path.display())
    }

    /// Writes who holds the lock.
    fn record(&mut self) -> Result<()> {
        let since = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
        let cmd: Vec<String> = std::env::args().take(2).collect();
        self.file.set_len(0)?;
        writeln!(
            self.file,
            "{} {since} {}",
            std::process::id(),
            cmd.join(" ")
        )?;
        Ok(())
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        if self.remove {
            // Still holding the lock: a taker that opened the old file will
            // see that the path no longer names it.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn open_and_lock(path: &Path) -> Result<File> {
    // Never through a link: a planted one would receive our pid.
    let file = crate::safe_io::open_private_nofollow(path)
        .with_context(|| format!("opening lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Failure::new(
            exit::LOCKED,
            format!(
                "another run holds {}{}; wait for it to finish (or check that it is not stuck)",
                path.display(),
                holder(&file)
            ),
        )
        .into()),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// ` (pid N, "cmd", since T)` from what the holder recorded; a stale or
/// foreign record gives what can be read of it.
fn holder(file: &File) -> String {
    let mut text = String::new();
    let _ = file.take(256).read_to_string(&mut text);
    let mut parts = text.lines().next().unwrap_or("").splitn(3, ' ');
    let pid: String = parts
        .next()
        .unwrap_or("")
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    if pid.is_empty() {
        return String::new();
    }
    let since = parts
        .next()
        .filter(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok());
    let cmd = parts.next().map(crate::report::clean);
    let mut out = format!(" (pid {pid}");
    if let Some(c) = cmd.filter(|c| !c.is_empty()) {
        out.push_str(&format!(", {c:?}"));
    }
    if let Some(s) = since {
        out.push_str(&format!(", since {s}"));
    }
    out.push(')');
    out
}

#[cfg(unix)]
fn still_named(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn still_named(_: &File, path: &Path) -> bool {
    path.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_names_its_holder_and_a_one_shot_lock_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.jsonl");
        let first = RunLock::acquire_once(&target).unwrap();
        let err = RunLock::acquire(&target).err().unwrap();
        assert_eq!(exit::code_of(&err), exit::LOCKED);
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("since 20"), "{msg}");
        drop(first);
        assert!(!lock_path(&target).exists());
        let kept = RunLock::acquire(&target).unwrap();
        drop(kept);
        assert!(lock_path(&target).exists());
    }
}
