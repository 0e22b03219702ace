//! Redaction of secrets and home-directory paths, on by default.
//!
//! Every string in an output line goes through [`Redactor::value`]: message
//! text, reasoning, tool-call arguments, tool results, system prompts and
//! tool definitions. Matches become `[REDACTED:<kind>]` (home paths become
//! `~`), and the count per kind is kept for the summary and the manifest;
//! the secrets themselves are never stored or printed.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use regex::{Regex, RegexSet};
use serde_json::Value;

use crate::model::Message;
use crate::sampled_hash::BuildSampled;

/// Secret shapes of the common providers. Order matters: more specific
/// shapes come first so they name the kind.
const PATTERNS: &[(&str, &str)] = &[
    (
        "private_key",
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY-----",
    ),
    ("anthropic_key", r"(?-u:\b)sk-ant-[A-Za-z0-9_-]{20,}"),
    ("openrouter_key", r"(?-u:\b)sk-or-v1-[A-Za-z0-9]{32,}"),
    (
        "openai_key",
        r"(?-u:\b)sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}",
    ),
    (
        "github_token",
        r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
    ),
    ("google_api_key", r"(?-u:\b)AIza[0-9A-Za-z_-]{35}"),
    ("google_oauth_secret", r"(?-u:\b)GOCSPX-[A-Za-z0-9_-]{20,}"),
    (
        "aws_access_key",
        r"(?-u:\b)(?:AKIA|ASIA)[0-9A-Z]{16}(?-u:\b)",
    ),
    ("slack_token", r"(?-u:\b)xox[abprs]-[A-Za-z0-9-]{10,}"),
    ("huggingface_token", r"(?-u:\b)hf_[A-Za-z0-9]{30,}"),
    ("groq_key", r"(?-u:\b)gsk_[A-Za-z0-9]{40,}"),
    ("xai_key", r"(?-u:\b)xai-[A-Za-z0-9]{40,}"),
    (
        "stripe_key",
        r"(?-u:\b)(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{20,}",
    ),
    (
        "telegram_bot_token",
        r"(?-u:\b)[0-9]{8,10}:[A-Za-z0-9_-]{35}(?-u:\b)",
    ),
    (
        "jwt",
        r"(?-u:\b)eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",
    ),
    ("bearer", r"(?i)(?-u:\b)bearer\s+[A-Za-z0-9._~+/=-]{16,}"),
];

/// Names of settings whose values are secrets.
fn secret_setting(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["key", "token", "secret", "password", "passwd", "credential"]
        .iter()
        .any(|w| n.contains(w))
}

pub struct Redactor {
    /// Every pattern (secrets, configured literals, home paths) in one set:
    /// a string that matches none of them is scanned once and left alone.
    any: RegexSet,
    patterns: Vec<(&'static str, Regex)>,
    /// The exact secret values from `.env` and `config.yaml`.
    literals: Option<Regex>,
    home_path: Regex,
    pub counts: BTreeMap<&'static str, usize>,
    /// Long texts that repeat across sessions (system prompts): their
    /// redaction and what it counted.
    cache: HashMap<String, Cached, BuildSampled>,
}

/// What one redaction counted, per kind.
pub type Counted = Vec<(&'static str, usize)>;

type Cached = (Option<String>, Counted);

/// Distinct repeated texts remembered at most (about 12 MB of prompts).
const CACHE_ENTRIES: usize = 1024;

const HOME_PATH: &str = r"(^|[^A-Za-z0-9._/~-])/(?:Users|home)/[A-Za-z0-9._-]+";

impl Redactor {
    /// Patterns plus the secret values configured under `home` (if given).
    pub fn new(home: Option<&Path>) -> Redactor {
        let patterns: Vec<(&'static str, Regex)> = PATTERNS
            .iter()
            .map(|(kind, re)| (*kind, Regex::new(re).expect("valid built-in pattern")))
            .collect();
        let mut values: Vec<String> = home.map(configured_secrets).unwrap_or_default();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        values.dedup();
        let literal_re = (!values.is_empty()).then(|| {
            let alt: Vec<String> = values.iter().map(|v| regex::escape(v)).collect();
            alt.join("|")
        });
        let mut all: Vec<&str> = PATTERNS.iter().map(|(_, re)| *re).collect();
        all.push(HOME_PATH);
        if let Some(l) = &literal_re {
            all.push(l);
        }
        Redactor {
            any: RegexSet::new(all).expect("valid pattern set"),
            patterns,
            literals: literal_re.map(|l| Regex::new(&l).expect("escaped literals")),
            home_path: Regex::new(HOME_PATH).expect("valid home pattern"),
            counts: BTreeMap::new(),
            cache: HashMap::default(),
        }
    }

    /// Redacts one string; `None` when there is nothing to redact.
    pub fn text(&mut self, s: &str) -> Option<String> {
        if !self.any.is_match(s) {
            return None;
        }
        let mut cur: Option<String> = None;
        if let Some(re) = &self.literals {
            cur = replace_counted(
                re,
                s,
                "[REDACTED:configured_secret]",
                "configured_secret",
                &mut self.counts,
            );
        }
        for (kind, re) in &self.patterns {
            let src = cur.as_deref().unwrap_or(s);
            let token = if *kind == "bearer" {
                format!("Bearer [REDACTED:{kind}]")
            } else {
                format!("[REDACTED:{kind}]")
            };
            if let Some(new) = replace_counted(re, src, &token, kind, &mut self.counts) {
                cur = Some(new);
            }
        }
        let src = cur.as_deref().unwrap_or(s);
        if let Some(new) =
            replace_counted(&self.home_path, src, "${1}~", "home_path", &mut self.counts)
        {
            cur = Some(new);
        }
        cur
    }

    /// Redacts a string in place.
    pub fn string(&mut self, s: &mut String) {
        if let Some(new) = self.text(s) {
            *s = new;
        }
    }

    /// Like [`Redactor::string`], for a text that many sessions share (a
    /// system prompt): each distinct text is scanned once; every occurrence
    /// still counts.
    pub fn repeated(&mut self, s: &mut String) {
        if let Some((out, counts)) = self.cache.get(s.as_str()) {
            for (kind, n) in counts {
                *self.counts.entry(kind).or_default() += n;
            }
            if let Some(out) = out {
                *s = out.clone();
            }
            return;
        }
        let (out, counted) = self.counted(s);
        if self.cache.len() >= CACHE_ENTRIES {
            self.cache.clear();
        }
        self.cache.insert(s.clone(), (out.clone(), counted));
        if let Some(out) = out {
            *s = out;
        }
    }

    /// Redacts `s` and returns, besides the result, what this call counted
    /// (so a caller that caches the result can count it again on reuse).
    pub fn counted(&mut self, s: &str) -> (Option<String>, Counted) {
        let before = self.counts.clone();
        let out = self.text(s);
        let counted = self
            .counts
            .iter()
            .map(|(k, n)| (*k, n - before.get(k).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect();
        (out, counted)
    }

    /// Counts again what an earlier, cached redaction counted.
    pub fn recount(&mut self, counted: &[(&'static str, usize)]) {
        for (kind, n) in counted {
            *self.counts.entry(kind).or_default() += n;
        }
    }

    /// Redacts every string inside a JSON value, in place.
    pub fn value(&mut self, v: &mut Value) {
        match v {
            Value::String(s) => self.string(s),
            Value::Array(items) => items.iter_mut().for_each(|i| self.value(i)),
            Value::Object(map) => map.values_mut().for_each(|i| self.value(i)),
            _ => {}
        }
    }

    /// Redacts every string of a message: text, reasoning, tool calls.
    pub fn message(&mut self, m: &mut Message) {
        self.string(&mut m.content);
        if let Some(r) = m.reasoning.as_mut() {
            self.string(r);
        }
        for c in &mut m.tool_calls {
            self.value(&mut c.arguments);
        }
    }
}

/// Replaces every match, counting them under `kind`; `None` if none.
fn replace_counted(
    re: &Regex,
    src: &str,
    with: &str,
    kind: &'static str,
    counts: &mut BTreeMap<&'static str, usize>,
) -> Option<String> {
    let mut n = 0;
    let out = re.replace_all(src, |caps: &regex::Captures<'_>| {
        n += 1;
        let mut dst = String::new();
        caps.expand(with, &mut dst);
        dst
    });
    if n == 0 {
        return None;
    }
    *counts.entry(kind).or_default() += n;
    Some(out.into_owned())
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
