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
            FileDest::Regular(real) => Dest::File(real),
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

    // Everything this run may create or replace.
    let mut written: Vec<(String, PathBuf)> = Vec::new();
    match &dest {
        Dest::File(p) => written.push(("--out".into(), p.clone())),
        Dest::Special(p) => written.push(("--out".into(), p.clone())),
        Dest::Dir(d) => {
            written.push(("--out".into(), d.clone()));
            for name in DIR_FILES {
                let path = d.join(name);
                safe_io::check_managed_file(&path).map_err(refuse)?;
                written.push(("--out".into(), path));
            }
            let lock = with_suffix(&d.join(DIR_LOCK), ".lock");
            safe_io::check_managed_file(&lock).map_err(refuse)?;
        }
        Dest::Stdout => {}
    }
    if let Some(s) = &state {
        written.push(("--state".into(), s.clone()));
    }
    if let Some(l) = &lock {
        written.push(("the lock".into(), with_suffix(l, ".lock")));
    }
    refuse_inputs(&written, &inputs(home, system_prompt_file))?;
    if let (Some(s), Dest::File(f) | Dest::Special(f)) = (&state, &dest)
        && safe_io::canonical_ish(s) == safe_io::canonical_ish(f)
    {
        return Err(usage("--state and --out name the same file".to_string()));
    }
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

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut name = p.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
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
