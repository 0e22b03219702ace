//! A model id (`ORG/NAME`) found offline in the local Hugging Face cache,
//! as huggingface_hub finds it without the network: the cache directory is
//! `HF_HUB_CACHE`, else `HF_HOME/hub`, else `XDG_CACHE_HOME/huggingface/hub`,
//! else `~/.cache/huggingface/hub`; the model lives in
//! `models--ORG--NAME/`, whose `refs/main` names the snapshot
//! (`snapshots/<revision>/`, files linked into `blobs/`). An existing path
//! of that name wins, as in transformers. Nothing here touches the network.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// The cache directory huggingface_hub would use.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("HF_HUB_CACHE")
        .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| var("XDG_CACHE_HOME").map(|x| x.join("huggingface/hub")))
        .or_else(|| var("HOME").map(|h| h.join(".cache/huggingface/hub")))
}

/// Whether `s` reads as a Hub model id: `ORG/NAME`, each part made of
/// letters, digits, `-`, `_` and `.` (not starting with `.`).
pub fn is_model_id(s: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    matches!(s.split_once('/'), Some((org, name)) if part(org) && part(name))
}

/// The cached snapshot directory of `id` under `cache`, or why there is none.
pub fn snapshot(cache: &Path, id: &str) -> Result<PathBuf, String> {
    let repo = cache.join(format!("models--{}", id.replace('/', "--")));
    if !repo.is_dir() {
        return Err(format!("{} does not exist", repo.display()));
    }
    let refs = repo.join("refs/main");
    let rev = std::fs::read_to_string(&refs)
        .map_err(|e| format!("cannot read {}: {e}", refs.display()))?;
    let rev = rev.trim();
    if rev.is_empty() || rev.contains(['/', '\\']) || rev.starts_with('.') {
        return Err(format!("{} does not name a revision", refs.display()));
    }
    let dir = repo.join("snapshots").join(rev);
    if !dir.join("tokenizer.json").is_file() {
        return Err(format!(
            "{} holds no tokenizer.json (download it with `huggingface-cli download {id}`)",
            dir.display()
        ));
    }
    Ok(dir)
}

/// `--tokenizer`'s value as a path: an existing file or directory as is,
/// else a model id resolved in the cache.
pub fn resolve(value: &Path) -> Result<PathBuf> {
    if value.exists() {
        return Ok(value.to_path_buf());
    }
    let Some(id) = value.to_str().filter(|s| is_model_id(s)) else {
        bail!("--tokenizer: {} does not exist", value.display());
    };
    let Some(cache) = cache_dir() else {
        bail!(
            "--tokenizer {id}: no such directory, and no Hugging Face cache directory is known (set HF_HUB_CACHE or HF_HOME)"
        );
    };
    snapshot(&cache, id).map_err(|why| {
        anyhow::anyhow!(
            "--tokenizer {id}: no such directory, and not in the Hugging Face cache at {}: {why}",
            cache.display()
        )
    })
}

/// The model Hermes serves (`model.default` of `config.yaml`, or `model`
/// itself when it is a name) and whether its tokenizer is cached.
#[derive(Debug, serde::Serialize)]
pub struct Serving {
    pub model: String,
    /// The cached snapshot to give `--tokenizer` (the id itself works).
    pub tokenizer: Option<String>,
    /// Where it was looked for, or why not.
    pub looked_in: String,
}

impl Serving {
    pub fn of(home: &Path) -> Option<Serving> {
        let settings = crate::hermes_settings::HermesSettings::read(home);
        let model = settings
            .config_value(&["model", "default"])
            .or_else(|| settings.config_value(&["model"]))?;
        let (tokenizer, looked_in) = match cache_dir() {
            _ if !is_model_id(&model) => (None, "not a Hugging Face model id".to_string()),
            None => (None, "no Hugging Face cache directory known".to_string()),
            Some(cache) => match snapshot(&cache, &model) {
                Ok(dir) => (Some(dir.display().to_string()), cache.display().to_string()),
                Err(why) => (None, why),
            },
        };
        Some(Serving {
            model,
            tokenizer,
            looked_in,
        })
    }

    pub fn render(&self) -> String {
        match &self.tokenizer {
            Some(_) => format!(
                "\nserving            {} (config.yaml); its tokenizer is cached: export --tokenizer {}\n",
                self.model, self.model
            ),
            None => format!(
                "\nserving            {} (config.yaml); its tokenizer is not cached ({})\n",
                self.model, self.looked_in
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids() {
        assert!(is_model_id("Qwen/Qwen3-0.6B"));
        assert!(is_model_id("meta-llama/Llama-3.1-8B-Instruct"));
        assert!(!is_model_id("model"));
        assert!(!is_model_id("a/b/c"));
        assert!(!is_model_id("./x"));
        assert!(!is_model_id("/abs"));
        assert!(!is_model_id("org/"));
    }

    #[test]
    fn refs_main_names_the_snapshot() {
        let cache = tempfile::tempdir().unwrap();
        let repo = cache.path().join("models--Org--Name");
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        assert!(snapshot(cache.path(), "Org/Name").is_err());
        std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
        let snap = repo.join("snapshots/abc123");
        std::fs::create_dir_all(&snap).unwrap();
        let err = snapshot(cache.path(), "Org/Name").unwrap_err();
        assert!(err.contains("no tokenizer.json"), "{err}");
        std::fs::write(snap.join("tokenizer.json"), "{}").unwrap();
        assert_eq!(snapshot(cache.path(), "Org/Name").unwrap(), snap);
        let missing = snapshot(cache.path(), "Org/Other").unwrap_err();
        assert!(missing.contains("models--Org--Other"), "{missing}");
    }
}
