//! Redaction of secrets and home-directory paths, on by default.
//!
//! Every string in an output line goes through [`Redactor::value`]: message
//! text, reasoning, tool-call arguments, tool results, system prompts and
//! tool definitions. Matches become `[REDACTED:<kind>]` (home paths become
//! `~`), and the count per kind is kept for the summary and the manifest;
//! the secrets themselves are never stored or printed.

use std::collections::BTreeMap;
use std::path::Path;

use regex::Regex;
use serde_json::Value;

/// Secret shapes of the common providers. Order matters: more specific
/// shapes come first so they name the kind.
const PATTERNS: &[(&str, &str)] = &[
    (
        "private_key",
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY-----",
    ),
    ("anthropic_key", r"\bsk-ant-[A-Za-z0-9_-]{20,}"),
    ("openrouter_key", r"\bsk-or-v1-[A-Za-z0-9]{32,}"),
    (
        "openai_key",
        r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}",
    ),
    (
        "github_token",
        r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
    ),
    ("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}"),
    ("google_oauth_secret", r"\bGOCSPX-[A-Za-z0-9_-]{20,}"),
    ("aws_access_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    ("slack_token", r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    ("huggingface_token", r"\bhf_[A-Za-z0-9]{30,}"),
    ("groq_key", r"\bgsk_[A-Za-z0-9]{40,}"),
    ("xai_key", r"\bxai-[A-Za-z0-9]{40,}"),
    (
        "stripe_key",
        r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{20,}",
    ),
    ("telegram_bot_token", r"\b[0-9]{8,10}:[A-Za-z0-9_-]{35}\b"),
    (
        "jwt",
        r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",
    ),
    ("bearer", r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{16,}"),
];

/// Names of settings whose values are secrets.
fn secret_setting(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["key", "token", "secret", "password", "passwd", "credential"]
        .iter()
        .any(|w| n.contains(w))
}

pub struct Redactor {
    patterns: Vec<(&'static str, Regex)>,
    /// The exact secret values from `.env` and `config.yaml`.
    literals: Option<Regex>,
    home_path: Regex,
    pub counts: BTreeMap<&'static str, usize>,
}

impl Redactor {
    /// Patterns plus the secret values configured under `home` (if given).
    pub fn new(home: Option<&Path>) -> Redactor {
        let patterns = PATTERNS
            .iter()
            .map(|(kind, re)| (*kind, Regex::new(re).expect("valid built-in pattern")))
            .collect();
        let mut values: Vec<String> = home.map(configured_secrets).unwrap_or_default();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        values.dedup();
        let literals = (!values.is_empty()).then(|| {
            let alt: Vec<String> = values.iter().map(|v| regex::escape(v)).collect();
            Regex::new(&alt.join("|")).expect("escaped literals")
        });
        Redactor {
            patterns,
            literals,
            home_path: Regex::new(r"(^|[^A-Za-z0-9._/~-])/(?:Users|home)/[A-Za-z0-9._-]+")
                .expect("valid home pattern"),
            counts: BTreeMap::new(),
        }
    }

    /// Redacts one string.
    pub fn text(&mut self, s: &str) -> Option<String> {
        let mut cur: Option<String> = None;
        if let Some(re) = &self.literals {
            let src = cur.as_deref().unwrap_or(s);
            let n = re.find_iter(src).count();
            if n > 0 {
                *self.counts.entry("configured_secret").or_default() += n;
                cur = Some(
                    re.replace_all(src, "[REDACTED:configured_secret]")
                        .into_owned(),
                );
            }
        }
        for (kind, re) in &self.patterns {
            let src = cur.as_deref().unwrap_or(s);
            let n = re.find_iter(src).count();
            if n > 0 {
                *self.counts.entry(kind).or_default() += n;
                let token = format!("[REDACTED:{kind}]");
                let replaced = if *kind == "bearer" {
                    re.replace_all(src, format!("Bearer {token}").as_str())
                } else {
                    re.replace_all(src, token.as_str())
                };
                cur = Some(replaced.into_owned());
            }
        }
        let src = cur.as_deref().unwrap_or(s);
        let n = self.home_path.find_iter(src).count();
        if n > 0 {
            *self.counts.entry("home_path").or_default() += n;
            cur = Some(self.home_path.replace_all(src, "${1}~").into_owned());
        }
        cur
    }

    /// Redacts every string inside a JSON value, in place.
    pub fn value(&mut self, v: &mut Value) {
        match v {
            Value::String(s) => {
                if let Some(new) = self.text(s) {
                    *s = new;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.value(i)),
            Value::Object(map) => map.values_mut().for_each(|i| self.value(i)),
            _ => {}
        }
    }
}

/// Secret values set in `HERMES_HOME/.env` and `config.yaml`: values of
/// settings whose name says key, token, secret or password, at least six
/// characters long.
pub fn configured_secrets(home: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for file in [".env", "config.yaml"] {
        let Ok(text) = std::fs::read_to_string(home.join(file)) else {
            continue;
        };
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let Some((name, value)) = line.split_once('=').or_else(|| line.split_once(':')) else {
                continue;
            };
            let name = name.trim().trim_start_matches("- ");
            let value = value.split(" #").next().unwrap_or_default().trim();
            let value = value.trim_matches(|c| c == '"' || c == '\'');
            if secret_setting(name)
                && value.len() >= 6
                && !matches!(value, "true" | "false" | "null" | "none")
                && !value.contains(char::is_whitespace)
            {
                out.push(value.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn red(s: &str) -> (String, BTreeMap<&'static str, usize>) {
        let mut r = Redactor::new(None);
        let out = r.text(s).unwrap_or_else(|| s.to_string());
        (out, r.counts)
    }

    #[test]
    fn each_kind_is_caught() {
        let cases = [
            (
                "key sk-proj-abcdefghijklmnopqrstuvwxyz0123456789",
                "openai_key",
            ),
            (
                "sk-ant-api03-abcdefghijklmnopqrstuvwxyz012345",
                "anthropic_key",
            ),
            (
                "sk-or-v1-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "openrouter_key",
            ),
            ("ghp_abcdefghijklmnopqrstuvwxyz0123456789AB", "github_token"),
            ("AIzaSyA1234567890abcdefghijklmnopqrstuv", "google_api_key"),
            ("GOCSPX-abcdefghijklmnopqrstuvwx12", "google_oauth_secret"),
            ("AKIAIOSFODNN7EXAMPLE", "aws_access_key"),
            ("xoxb-123456789012-abcdefghijkl", "slack_token"),
            ("hf_abcdefghijklmnopqrstuvwxyz012345", "huggingface_token"),
            (
                "bot 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0 here",
                "telegram_bot_token",
            ),
            (
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                "jwt",
            ),
            ("Authorization: Bearer abcdefghijklmnop.qrstuv", "bearer"),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----",
                "private_key",
            ),
            ("see /Users/alex/notes.txt", "home_path"),
            ("cd /home/timmy/src", "home_path"),
        ];
        for (text, kind) in cases {
            let (out, counts) = red(text);
            assert_eq!(counts.get(kind), Some(&1), "{kind}: {out}");
            assert!(
                !out.contains("abcdefghijklmnop") || kind == "home_path",
                "{out}"
            );
        }
        assert_eq!(red("cd /home/timmy/src").0, "cd ~/src");
    }

    #[test]
    fn near_misses_are_left_alone() {
        for text in [
            "the risk-assessment-framework-document is ready",
            "a task-list with sk-short",
            "Bearer of bad news",
            "port 8642:8642 in docker",
            "call 123456789:short",
            "eyJ alone is not a token",
            "/var/home/shared and /homeless/x",
            "AKIA is a prefix",
            "token count: 12",
        ] {
            let (out, counts) = red(text);
            assert_eq!(out, text);
            assert!(counts.is_empty(), "{text}: {counts:?}");
        }
    }

    #[test]
    fn configured_values_are_redacted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".env"),
            "API_SERVER_KEY=plain-secret-value-42\nDEBUG=true\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("config.yaml"),
            "model:\n  api_key: \"another-one-99\"\n  default: fake-model-1\n",
        )
        .unwrap();
        let mut r = Redactor::new(Some(dir.path()));
        let out = r
            .text("x plain-secret-value-42 y another-one-99 fake-model-1")
            .unwrap();
        assert_eq!(
            out,
            "x [REDACTED:configured_secret] y [REDACTED:configured_secret] fake-model-1"
        );
    }
}
