//! Locating HERMES_HOME, the profile, and the stores inside it.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// Which Hermes home the user chose: `--hermes-home` and `--profile`.
#[derive(Debug, Clone, Default)]
pub struct HomeChoice {
    pub dir: Option<PathBuf>,
    pub profile: Option<String>,
}

impl HomeChoice {
    /// Whether the user named a home or profile.
    pub fn is_explicit(&self) -> bool {
        self.dir.is_some() || self.profile.is_some()
    }

    pub fn resolve(&self) -> Result<HermesHome> {
        HermesHome::resolve(self.dir.as_deref(), self.profile.as_deref())
    }
}

/// A resolved Hermes home (or profile home) directory.
#[derive(Debug, Clone)]
pub struct HermesHome {
    pub dir: PathBuf,
}

impl HermesHome {
    /// `dir` (`--hermes-home`), else `$HERMES_HOME`, else `~/.hermes`; then
    /// `profiles/<profile>`.
    pub fn resolve(dir: Option<&Path>, profile: Option<&str>) -> Result<HermesHome> {
        let root = match dir {
            Some(dir) => dir.to_path_buf(),
            None => match std::env::var_os("HERMES_HOME").filter(|v| !v.is_empty()) {
                Some(dir) => PathBuf::from(dir),
                None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
                    Some(home) => Path::new(&home).join(".hermes"),
                    None => bail!("no --hermes-home given and neither HERMES_HOME nor HOME is set"),
                },
            },
        };
        if !root.is_dir() {
            bail!(
                "Hermes home {} does not exist or is not a directory (set --hermes-home or HERMES_HOME)",
                root.display()
            );
        }
        let dir = match profile {
            Some(name) => {
                if name.is_empty() || name.contains(['/', '\\']) || name == ".." {
                    bail!("invalid profile name {name:?}");
                }
                let dir = root.join("profiles").join(name);
                if !dir.is_dir() {
                    bail!(
                        "profile {name:?} not found: {} does not exist",
                        dir.display()
                    );
                }
                dir
            }
            None => root,
        };
        Ok(HermesHome { dir })
    }

    /// Names of the profiles under this home, sorted.
    pub fn profiles(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.join("profiles"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.path().is_dir())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    pub fn state_db(&self) -> PathBuf {
        self.dir.join("state.db")
    }

    pub fn response_store(&self) -> PathBuf {
        self.dir.join("response_store.db")
    }

    pub fn sessions_dir(&self) -> PathBuf {
        self.dir.join("sessions")
    }
}
