//! Which system prompt a sample carries (`--system-prompt`): the policy,
//! chosen once per run, that the formatters apply per session.

use std::path::Path;

use anyhow::{Context, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemPolicy {
    /// What the session ran with (Hermes's prompt plus Responses instructions).
    Session,
    /// Only the persona part of the stored prompt; `SOUL.md`'s text when
    /// known (filled in once the home is known).
    Soul(Option<String>),
    None,
    /// Replaced by this text.
    Fixed(String),
}

impl SystemPolicy {
    /// `session`, `soul`, `none`, or a file whose text (without its trailing
    /// newline) replaces the prompt.
    pub fn from_flag(value: &str) -> Result<SystemPolicy> {
        Ok(match value {
            "session" => SystemPolicy::Session,
            "soul" => SystemPolicy::Soul(None),
            "none" => SystemPolicy::None,
            path => SystemPolicy::Fixed(
                crate::safe_io::read_text(Path::new(path), crate::safe_io::MAX_PROMPT_BYTES)
                    .with_context(|| format!("--system-prompt: cannot read {path}"))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
        })
    }

    /// The name the manifest records.
    pub fn as_str(&self) -> &'static str {
        match self {
            SystemPolicy::Session => "session",
            SystemPolicy::Soul(_) => "soul",
            SystemPolicy::None => "none",
            SystemPolicy::Fixed(_) => "file",
        }
    }
}
