//! Where an export writes, decided (and checked) before anything is read
//! or written.
//!
//! - `--out FILE` behaves like a shell redirection: links are followed and a
//!   special file (`/dev/stdout`, a FIFO, a terminal) is written into, never
//!   replaced; a regular file is replaced atomically at the link's target.
//! - Inside an output directory this tool manages, only regular files are
//!   written: a link or special file at `train.jsonl`, `valid.jsonl`,
//!   `manifest.json`, `README.md` (the dataset card) or the lock is refused.
//! - No output, state or lock path may be one of the inputs: Hermes's
//!   stores and their side files, `.env`, `config.yaml`, `SOUL.md`, anything
//!   under `sessions/`, or the `--system-prompt` file.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::config::OutTarget;
use crate::exit::{self, Failure};
use crate::home::HermesHome;
use crate::lock::{RunLock, lock_path};
use crate::safe_io::{self, FileDest};

/// Files an `--out DIR/` export writes, besides temporary files.
pub const DIR_FILES: [&str; 4] = ["train.jsonl", "valid.jsonl", "manifest.json", "README.md"];
/// The lock of a directory export without `--state`.
pub const DIR_LOCK: &str = ".hermes-harvest";

/// The resolved destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    Stdout,
    /// A regular file (links resolved), replaced atomically.
    File(PathBuf),
    /// A special file, written into.
    Special(PathBuf),
    Dir(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub dest: Dest,
    /// `--state`, links resolved.
    pub state: Option<PathBuf>,
    /// What the run lock is named after (`<this>.lock`), if any.
    pub lock: Option<PathBuf>,
    /// The destination as recorded in the state's output identity.
    pub out_id: String,
}

impl Plan {
    /// Takes the run lock. A one-shot `--out FILE` removes its lock when
    /// the run ends; a job's lock (its state's, its directory's) stays.
    pub fn take_lock(&self) -> Result<Option<RunLock>> {
        let Some(target) = &self.lock else {
            return Ok(None);
        };
        let once = self.state.is_none() && matches!(self.dest, Dest::File(_));
        Ok(Some(if once {
            RunLock::acquire_once(target)?
        } else {
            RunLock::acquire(target)?
        }))
    }
}

fn usage(msg: String) -> anyhow::Error {
    Failure::new(exit::USAGE, msg).into()
}

fn refuse(msg: String) -> anyhow::Error {
    Failure::new(exit::ERROR, msg).into()
}

/// Resolves and checks every path an export will write.
pub fn plan(
    out: &OutTarget,
    state: Option<&Path>,
    home: &HermesHome,
    system_prompt_file: Option<&Path>,
) -> Result<Plan> {
    let dest = match out {
        OutTarget::Stdout => Dest::Stdout,
        OutTarget::Dir(d) => Dest::Dir(d.clone()),
        OutTarget::File(p) => match safe_io::resolve_out_file(p)
            .map_err(|e| usage(format!("--out {}: {e}", p.display())))?
        {
            FileDest::Regular(real) => {
                check_out_file(p, &real)?;
                Dest::File(real)
            }
            FileDest::Special(real) => Dest::Special(real),
        },
    };
    let state = state.map(state_file).transpose()?;
    let lock = match (&state, &dest) {
        (Some(s), _) => Some(s.clone()),
        (None, Dest::File(p)) => Some(p.clone()),
        (None, Dest::Dir(d)) => Some(d.join(DIR_LOCK)),
        (None, Dest::Stdout | Dest::Special(_)) => None,
    };
    let written = written(&dest, state.as_ref(), lock.as_ref())?;
    refuse_inputs(&written, &inputs(home, system_prompt_file))?;
    refuse_collisions(&written)?;
    let out_id = match &dest {
        Dest::Stdout => "-".to_string(),
        Dest::File(p) | Dest::Special(p) | Dest::Dir(p) => {
            safe_io::canonical_ish(p).display().to_string()
        }
    };
    Ok(Plan {
        dest,
        state,
        lock,
        out_id,
    })
}

/// Everything this run may create or replace, by the flag it comes from.
fn written(
    dest: &Dest,
    state: Option<&PathBuf>,
    lock: Option<&PathBuf>,
) -> Result<Vec<(String, PathBuf)>> {
    let mut written: Vec<(String, PathBuf)> = Vec::new();
    match dest {
        Dest::File(p) | Dest::Special(p) => written.push(("--out".into(), p.clone())),
        Dest::Dir(d) => {
            written.push(("--out".into(), d.clone()));
            for name in DIR_FILES {
                let path = d.join(name);
                safe_io::check_managed_file(&path).map_err(refuse)?;
                written.push((format!("--out {}", d.display()), path));
            }
            let lock = lock_path(&d.join(DIR_LOCK));
            safe_io::check_managed_file(&lock).map_err(refuse)?;
        }
        Dest::Stdout => {}
    }
    if let Some(s) = state {
        check_not_managed("--state", s)?;
        written.push(("--state".into(), s.clone()));
    }
    if let Some(l) = lock {
        written.push(("the lock".into(), lock_path(l)));
    }
    Ok(written)
}

/// No two things this run writes may be one file.
fn refuse_collisions(written: &[(String, PathBuf)]) -> Result<()> {
    let real: Vec<PathBuf> = written
        .iter()
        .map(|(_, p)| safe_io::canonical_ish(p))
        .collect();
    for (i, a) in real.iter().enumerate() {
        if let Some(j) = real[..i].iter().position(|b| b == a) {
            return Err(usage(format!(
                "{} and {} name the same file, {}; each output, state and lock must be its own file",
                written[j].0,
                written[i].0,
                written[i].1.display()
            )));
        }
    }
    Ok(())
}

/// `--out FILE`: its directory exists (nothing is created for it), it is
/// no file of a directory this tool manages, and no state file.
fn check_out_file(given: &Path, real: &Path) -> Result<()> {
    let parent = real.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = parent
        && !dir.is_dir()
    {
        return Err(usage(format!(
            "--out {}: the directory {} does not exist; create it first",
            given.display(),
            dir.display()
        )));
    }
    check_not_managed("--out", real)?;
    if looks_like_state(real) {
        return Err(usage(format!(
            "--out {} is a hermes-harvest state file; refusing to replace it (pass it as --state, or choose another path)",
            given.display()
        )));
    }
    Ok(())
}

/// Refuses a path that is one of the files of an output directory this
/// tool manages (one holding its `manifest.json`): that directory is
/// written only as `--out DIR/`.
fn check_not_managed(flag: &str, path: &Path) -> Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    let ours = DIR_FILES.iter().any(|f| name == *f)
        || name.to_str().is_some_and(|n| n.starts_with(DIR_LOCK));
    if ours && is_managed_dir(dir) {
        return Err(usage(format!(
            "{flag} {} is a file of the dataset directory {} that this tool manages; write it as --out {}/ or choose another path",
            path.display(),
            dir.display(),
            dir.display()
        )));
    }
    Ok(())
}

/// A directory holding a `manifest.json` this tool wrote.
fn is_managed_dir(dir: &Path) -> bool {
    head(&dir.join("manifest.json"))
        .is_some_and(|h| h.contains("\"tool\"") && h.contains("\"hermes-harvest\""))
}

/// A state file of this tool: one JSON object that starts with its
/// version and holds a watermark.
fn looks_like_state(path: &Path) -> bool {
    head(path).is_some_and(|h| {
        let t = h.trim_start();
        t.starts_with('{')
            && t[1..].trim_start().starts_with("\"version\"")
            && h.contains("\"watermark\"")
    })
}

/// The first 4 KiB of a regular file, as text.
fn head(path: &Path) -> Option<String> {
    use std::io::Read;
    let file = safe_io::open_regular(path, u64::MAX).ok()?;
    let mut buf = Vec::new();
    file.take(4096).read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// `--state`: followed through links; a regular file or nothing yet.
fn state_file(p: &Path) -> Result<PathBuf> {
    let real = safe_io::resolve_links(p).map_err(|e| usage(format!("--state: {e}")))?;
    if let Some(kind) =
        safe_io::special_file(&real).or_else(|| real.is_dir().then_some("a directory"))
    {
        return Err(usage(format!(
            "--state {} is {kind}; it must be a regular file (or not exist yet)",
            p.display()
        )));
    }
    Ok(real)
}

/// Refuses to write any of `written` inside the inputs.
fn refuse_inputs(written: &[(String, PathBuf)], inputs: &[Input]) -> Result<()> {
    for (what, path) in written {
        let real = safe_io::canonical_ish(path);
        for input in inputs {
            let hit = if input.is_dir {
                real.starts_with(&input.path)
            } else {
                real == input.path
            };
            if hit {
                return Err(usage(format!(
                    "{what} {} is one of the inputs ({}); refusing to write there, choose a path outside them",
                    path.display(),
                    input.path.display()
                )));
            }
        }
    }
    Ok(())
}

struct Input {
    path: PathBuf,
    is_dir: bool,
}

/// The files an export reads (canonical paths), and `sessions/` as a
/// directory; for a profile, the root home's as well.
fn inputs(home: &HermesHome, system_prompt_file: Option<&Path>) -> Vec<Input> {
    let mut homes = vec![home.dir.clone()];
    if let Some(parent) = home.dir.parent()
        && parent.file_name().is_some_and(|n| n == "profiles")
        && let Some(root) = parent.parent()
    {
        homes.push(root.to_path_buf());
    }
    let mut out = Vec::new();
    for h in homes {
        for store in ["state.db", "response_store.db"] {
            for side in ["", "-wal", "-shm", "-journal"] {
                out.push(Input {
                    path: safe_io::canonical_ish(&h.join(format!("{store}{side}"))),
                    is_dir: false,
                });
            }
        }
        for f in [".env", "config.yaml", "SOUL.md"] {
            out.push(Input {
                path: safe_io::canonical_ish(&h.join(f)),
                is_dir: false,
            });
        }
        out.push(Input {
            path: safe_io::canonical_ish(&h.join("sessions")),
            is_dir: true,
        });
    }
    if let Some(f) = system_prompt_file {
        out.push(Input {
            path: safe_io::canonical_ish(f),
            is_dir: false,
        });
    }
    out
}
