//! Redaction of secrets and home-directory paths, on by default.
//!
//! Every string in an output line goes through [`Redactor::value`]: message
//! text, reasoning, tool-call arguments, tool results, system prompts and
//! tool definitions. Matches become `[REDACTED:<kind>]` (home paths become
//! `~`), and the count per kind is kept for the summary and the manifest;
//! the secrets themselves are never stored or printed.

use std::collections::BTreeMap;

use regex::{Regex, RegexSet};
use serde_json::Value;

use crate::hermes_settings::HermesSettings;
use crate::model::Message;

/// How a match of a pattern is checked and replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// The whole match is the secret.
    Whole,
    /// A provider key `prefix + body`: the body may be wrapped over lines
    /// (a line break followed by more key characters) and must hold at
    /// least `min` characters; group 1, if any, is kept (`bot` of a Bot API
    /// URL).
    Key { min: usize },
    /// `Bearer <token>`: the word as written is kept, and the token must
    /// look like one (see [`looks_like_token`]), so "standard bearer
    /// responsibilities" and "ring bearer Jean-Christophe-Marie" stay.
    Bearer,
    /// Group 1 is kept, group 2 (else the rest of the match) is the
    /// secret; what follows group 2 in the match is kept.
    Keep1,
    /// A bare 40-character AWS secret access key: upper, lower and digits.
    AwsSecret,
}

/// Secret shapes of the common providers. Order matters: more specific
/// shapes come first so they name the kind. The shapes follow the public
/// rule sets of gitleaks (`config/gitleaks.toml`, rule ids in the comments)
/// and secrets-patterns-db, written here in our own terms; the generic
/// kinds (AWS secret keys, bearer tokens) need context, as those rule sets
/// require, because their bodies alone look like ordinary base64 or words.
const PATTERNS: &[(&str, &str, Rule)] = &[
    (
        "private_key",
        // With its END line, or (cut off) the base64 and header lines that
        // follow the BEGIN line; PGP blocks too.
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|(?:[ \t]*(?:\r?\n|\\n)[ \t]*(?:[A-Za-z0-9+/=]+|[A-Za-z-]+: [^\r\n]*)?)*)",
        Rule::Whole,
    ),
    (
        "anthropic_key",
        r"(?-u:\b)sk-ant-(?:[A-Za-z0-9_-]|\r?\n)+",
        Rule::Key { min: 20 },
    ),
    (
        "openrouter_key",
        r"(?-u:\b)sk-or-v1-(?:[A-Za-z0-9]|\r?\n)+",
        Rule::Key { min: 32 },
    ),
    (
        "openai_key",
        r"(?-u:\b)sk-(?:proj-|svcacct-|admin-)?(?:[A-Za-z0-9_-]|\r?\n)+",
        Rule::Key { min: 20 },
    ),
    (
        "github_token",
        r"(?-u:\b)(?:gh[pousr]_|github_pat_)(?:[A-Za-z0-9_]|\r?\n)+",
        Rule::Key { min: 22 },
    ),
    (
        "google_api_key",
        r"(?-u:\b)AIza(?:[0-9A-Za-z_-]|\r?\n)+",
        Rule::Key { min: 35 },
    ),
    (
        "google_oauth_secret",
        r"(?-u:\b)GOCSPX-(?:[A-Za-z0-9_-]|\r?\n)+",
        Rule::Key { min: 20 },
    ),
    (
        // A secret key after its access key id (gitleaks `aws-access-token`
        // gives the id's shape): the id is context for the 40 characters
        // that follow within a few lines; the id itself goes next.
        "aws_secret_key",
        r"((?-u:\b)(?:AKIA|ASIA)[0-9A-Z]{16}[^A-Za-z0-9/+=][\s\S]{0,200}?[^A-Za-z0-9/+=])([A-Za-z0-9/+]{40})(?:$|[^A-Za-z0-9/+=])",
        Rule::AwsSecret,
    ),
    (
        "aws_access_key",
        r"(?-u:\b)(?:AKIA|ASIA)[0-9A-Z]{16}(?-u:\b)",
        Rule::Whole,
    ),
    (
        "aws_secret_key",
        r#"(?i)((?:aws_?)?secret_?access_?key["']?\s*[:=]\s*["']?)([A-Za-z0-9/+]{40})"#,
        Rule::Keep1,
    ),
    (
        // secrets-patterns-db "AWS Secret Key": `aws` (or here `secret`)
        // shortly before the 40 characters; without it a 40-character
        // base64 string is just data.
        "aws_secret_key",
        r"(?i)((?:aws|secret)[^\n]{0,40}?[^A-Za-z0-9/+=])([A-Za-z0-9/+]{40})(?:$|[^A-Za-z0-9/+=])",
        Rule::AwsSecret,
    ),
    (
        "slack_token",
        r"(?-u:\b)xox[abprs]-(?:[A-Za-z0-9-]|\r?\n)+",
        Rule::Key { min: 10 },
    ),
    (
        "huggingface_token",
        r"(?-u:\b)hf_(?:[A-Za-z0-9]|\r?\n)+",
        Rule::Key { min: 30 },
    ),
    (
        "groq_key",
        r"(?-u:\b)gsk_(?:[A-Za-z0-9]|\r?\n)+",
        Rule::Key { min: 40 },
    ),
    (
        "xai_key",
        r"(?-u:\b)xai-(?:[A-Za-z0-9]|\r?\n)+",
        Rule::Key { min: 40 },
    ),
    (
        "stripe_key",
        r"(?-u:\b)(?:sk|rk|pk)_(?:live|test)_(?:[A-Za-z0-9]|\r?\n)+",
        Rule::Key { min: 20 },
    ),
    (
        "telegram_bot_token",
        // gitleaks `telegram-bot-api-token`: the bot id, `:`, then `A` and
        // 34 more (here: or more) of letters, digits, `_` and `-` (so `order 1234567890:
        // shipping-label-...` is no token). Also inside Bot API URLs
        // (`/bot<token>/sendMessage`).
        r"(?-u:\b)((?:bot)?)([0-9]{8,10}:A[A-Za-z0-9_-]{34,})",
        Rule::Keep1,
    ),
    (
        // gitleaks `slack-webhook-url`.
        "slack_webhook",
        r"(?:https?://)?hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/]{43,56}",
        Rule::Whole,
    ),
    (
        // secrets-patterns-db "Discord Webhook": the id and its token.
        "discord_webhook",
        r"(?:https?://)?(?:(?:ptb|canary)\.)?discord(?:app)?\.com/api/webhooks/[0-9]{17,20}/[A-Za-z0-9_-]{60,68}",
        Rule::Whole,
    ),
    (
        "jwt",
        r"(?-u:\b)eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",
        Rule::Whole,
    ),
    (
        "basic_auth",
        r#"(?i)((?:proxy-)?authorization["']?\s*[:=]\s*["']?\s*basic\s+)([A-Za-z0-9+/=._~-]{4,})"#,
        Rule::Keep1,
    ),
    (
        // In an Authorization header the word is context enough.
        "bearer",
        r#"(?i)((?:proxy-)?authorization["']?\s*[:=]\s*["']?\s*bearer\s+)([A-Za-z0-9._~+/=-]{8,})"#,
        Rule::Keep1,
    ),
    (
        "bearer",
        r"(?i)(?-u:\b)(bearer\s+)([A-Za-z0-9._~+/=-]{16,})",
        Rule::Bearer,
    ),
    (
        "url_credentials",
        // scheme://user:password@ (https, postgres, redis, amqp...)
        r"(?i)((?-u:\b)[a-z][a-z0-9+.-]{1,20}://)[^\s:/?#@\[\]]*:[^\s/?#@]+@",
        Rule::Keep1,
    ),
];

/// Word in a setting's name that makes its value a credential when it is
/// the last word, singular or plural, after any number suffix
/// (`API_SERVER_KEY`, `bot_token`, `db_password`, `SMTP_PASS`,
/// `HERMES_API_KEYS`, `OPENAI_API_KEY_2`); `key` and `token` count unless
/// the word before says otherwise (`sort_key`, `max_tokens`). The words
/// follow the credential keywords of gitleaks' generic rule
/// (`generic-api-key`: key, api, token, secret, client, passwd, password,
/// auth, access) and secrets-patterns-db's generic entries.
const CREDENTIAL_WORDS: &[&str] = &[
    "key",
    "apikey",
    "token",
    "secret",
    "password",
    "passwd",
    "pass",
    "pwd",
    "passphrase",
    "credential",
    "pat",
    "auth",
    "cookie",
    "signature",
    "dsn",
];

/// Words that make a setting a credential wherever they stand in its name
/// (`SECRET_KEY_BASE`, `password_hash_value`), unless the name ends in a
/// word of [`NOT_SECRET_LAST`].
const STRONG_WORDS: &[&str] = &[
    "secret",
    "password",
    "passwd",
    "passphrase",
    "credential",
    "apikey",
];

/// Last words that make a setting a description of a credential, not one
/// (`API_SERVER_KEY_FILE`, `password_min_length`).
const NOT_SECRET_LAST: &[&str] = &[
    "file", "path", "dir", "url", "name", "id", "type", "env", "var", "length", "len", "ttl",
    "expiry", "expires", "enabled", "header", "hint", "policy", "prompt", "min", "max", "count",
    "limit", "budget", "mode", "format", "version", "rotation", "provider", "source", "helper",
    "command", "cmd",
];

/// Words before `token` that make it a count or a vocabulary item.
const NOT_SECRET_TOKENS: &[&str] = &[
    "max",
    "min",
    "num",
    "context",
    "total",
    "output",
    "input",
    "reasoning",
    "thinking",
    "prompt",
    "completion",
    "special",
    "stop",
    "eos",
    "bos",
    "pad",
    "unk",
    "sep",
    "per",
    "new",
    "extra",
    "added",
];

/// Words before `key` that name something that is not a secret.
const NOT_SECRET_KEYS: &[&str] = &[
    "sort",
    "primary",
    "foreign",
    "unique",
    "partition",
    "group",
    "cache",
    "dedup",
    "dedupe",
    "lookup",
    "index",
    "map",
    "hash",
    "join",
    "order",
    "row",
    "type",
    "name",
    "id",
    "public",
    "hot",
    "short",
    "shortcut",
    "keyboard",
    "sequence",
    "shard",
    "routing",
    "idempotency",
];

/// Shortest configured value that is redacted; shorter ones are counted
/// as skipped (they would hit ordinary words).
pub const MIN_SECRET_LEN: usize = 6;

/// Whether a setting named `name` holds a credential: its name, split into
/// words (`_`, `-`, `.`, camelCase), ends with a credential word.
fn secret_setting(name: &str) -> bool {
    let mut words: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && prev_lower && !cur.is_empty() {
            words.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        cur.push(c.to_ascii_lowercase());
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    while words.len() > 1
        && words
            .last()
            .is_some_and(|w| w.bytes().all(|b| b.is_ascii_digit()))
    {
        words.pop();
    }
    let Some(last) = words.last() else {
        return false;
    };
    if NOT_SECRET_LAST.contains(&last.as_str()) {
        return false;
    }
    let singular = |w: &str| -> String {
        match w.strip_suffix('s') {
            Some(stem) if CREDENTIAL_WORDS.contains(&stem) => stem.to_string(),
            _ => w.to_string(),
        }
    };
    let last = singular(last);
    let before = (words.len() >= 2).then(|| words[words.len() - 2].as_str());
    if CREDENTIAL_WORDS.contains(&last.as_str()) {
        return match (last.as_str(), before) {
            ("key", Some(b)) => !NOT_SECRET_KEYS.contains(&b),
            ("token", Some(b)) => !NOT_SECRET_TOKENS.contains(&b),
            _ => true,
        };
    }
    words
        .iter()
        .any(|w| STRONG_WORDS.contains(&singular(w).as_str()))
}

#[derive(Clone)]
pub struct Redactor {
    /// Every pattern (secrets, configured literals, home paths) in one set:
    /// a string that matches none of them is scanned once and left alone.
    any: RegexSet,
    patterns: Vec<(&'static str, Regex, Rule)>,
    /// The exact secret values from `.env` and `config.yaml`.
    literals: Option<Regex>,
    home_path: Regex,
    pub counts: BTreeMap<&'static str, usize>,
    /// Credential settings whose values are too short to redact safely.
    pub skipped_short: usize,
    /// Settings files that could not be read (FIFO, too large...).
    pub problems: Vec<String>,
}

/// What one redaction counted, per kind.
pub type Counted = Vec<(&'static str, usize)>;

const HOME_PATH: &str = r"(^|[^A-Za-z0-9._/~-]|file://)/(?:Users|home)/[A-Za-z0-9._-]+";

impl Redactor {
    /// Patterns plus the secret values configured in Hermes's settings (if
    /// given).
    pub fn new(settings: Option<&HermesSettings>) -> Redactor {
        let patterns: Vec<(&'static str, Regex, Rule)> = PATTERNS
            .iter()
            .map(|(kind, re, rule)| {
                (
                    *kind,
                    Regex::new(re).expect("valid built-in pattern"),
                    *rule,
                )
            })
            .collect();
        let found = settings.map(configured_secrets).unwrap_or_default();
        let mut values = found.values;
        values.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        values.dedup();
        // At word boundaries: a password "hunter" leaves "hunters" alone.
        let literal_re = (!values.is_empty()).then(|| {
            let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            let alt: Vec<String> = values
                .iter()
                .map(|v| {
                    format!(
                        "{}{}{}",
                        if word(v.chars().next()) {
                            r"(?-u:\b)"
                        } else {
                            ""
                        },
                        regex::escape(v),
                        if word(v.chars().last()) {
                            r"(?-u:\b)"
                        } else {
                            ""
                        },
                    )
                })
                .collect();
            alt.join("|")
        });
        let mut all: Vec<&str> = PATTERNS.iter().map(|(_, re, _)| *re).collect();
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
            skipped_short: found.too_short,
            problems: found.problems,
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
        for (kind, re, rule) in &self.patterns {
            let src = cur.as_deref().unwrap_or(s);
            if let Some(new) = replace_rule(re, src, kind, *rule, &mut self.counts) {
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
            Value::Object(map) => {
                map.values_mut().for_each(|i| self.value(i));
                // A secret can be a key too (`{"tokens": {"ghp_…": "alice"}}`).
                if map.keys().any(|k| self.any.is_match(k)) {
                    let old = std::mem::take(map);
                    for (mut k, v) in old {
                        self.string(&mut k);
                        map.insert(k, v);
                    }
                }
            }
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

/// Replaces the matches of one pattern under its rule, counting them;
/// `None` if nothing changed.
fn replace_rule(
    re: &Regex,
    src: &str,
    kind: &'static str,
    rule: Rule,
    counts: &mut BTreeMap<&'static str, usize>,
) -> Option<String> {
    let token = format!("[REDACTED:{kind}]");
    let mut n = 0;
    let out = re.replace_all(src, |caps: &regex::Captures<'_>| {
        let whole = caps.get(0).map_or("", |m| m.as_str());
        let g = |i: usize| caps.get(i).map_or("", |m| m.as_str());
        let replaced = match rule {
            Rule::Whole => Some(token.clone()),
            Rule::Keep1 => Some(match caps.get(2) {
                Some(secret) => {
                    let after = &whole[secret.end() - caps.get(0).map_or(0, |m| m.start())..];
                    format!("{}{token}{after}", g(1))
                }
                None => format!("{}{token}", g(1)),
            }),
            Rule::Bearer => looks_like_token(g(2)).then(|| format!("{}{token}", g(1))),
            Rule::AwsSecret => {
                let key = g(2);
                let has = |f: fn(&char) -> bool| key.chars().any(|c| f(&c));
                (has(char::is_ascii_uppercase)
                    && has(char::is_ascii_lowercase)
                    && has(char::is_ascii_digit)
                    && !key.contains("//"))
                .then(|| {
                    let after = &whole[g(1).len() + key.len()..];
                    format!("{}{token}{after}", g(1))
                })
            }
            Rule::Key { min } => {
                let kept = g(1);
                let rest = &whole[kept.len()..];
                let (key, tail) = split_wrapped_key(rest);
                let body = key.chars().filter(|c| !matches!(c, '\r' | '\n')).count();
                (body >= min + prefix_len(key)).then(|| format!("{kept}{token}{tail}"))
            }
        };
        match replaced {
            Some(r) => {
                n += 1;
                r
            }
            None => whole.to_string(),
        }
    });
    if n == 0 {
        return None;
    }
    *counts.entry(kind).or_default() += n;
    Some(out.into_owned())
}

/// Characters of a key's fixed prefix (`sk-proj-`, `ghp_`, `123456789:`),
/// which do not count towards its minimum length.
fn prefix_len(key: &str) -> usize {
    if let Some((digits, _)) = key.split_once(':')
        && !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
    {
        return digits.len() + 1;
    }
    for p in [
        "sk-ant-",
        "sk-or-v1-",
        "sk-proj-",
        "sk-svcacct-",
        "sk-admin-",
        "github_pat_",
        "GOCSPX-",
        "sk_live_",
        "sk_test_",
        "rk_live_",
        "rk_test_",
        "pk_live_",
        "pk_test_",
        "sk-",
        "ghp_",
        "gho_",
        "ghu_",
        "ghs_",
        "ghr_",
        "AIza",
        "xoxa-",
        "xoxb-",
        "xoxp-",
        "xoxr-",
        "xoxs-",
        "hf_",
        "gsk_",
        "xai-",
    ] {
        if key.starts_with(p) {
            return p.len();
        }
    }
    0
}

/// Splits a key match that may run over line breaks into the key and what
/// follows it: a later line continues the key only when it looks like one
/// (a digit, an inner capital, `_` or `-`), not like the next word of
/// prose. Trailing line breaks are never part of the key.
fn split_wrapped_key(m: &str) -> (&str, &str) {
    let piece_end = |from: usize| m[from..].find(['\r', '\n']).map_or(m.len(), |i| from + i);
    let mut end = piece_end(0);
    loop {
        let rest = &m[end..];
        let brk = if rest.starts_with("\r\n") {
            2
        } else if rest.starts_with('\n') {
            1
        } else {
            break;
        };
        let start = end + brk;
        let stop = piece_end(start);
        if stop == start || !looks_like_key_piece(&m[start..stop]) {
            break;
        }
        end = stop;
    }
    m.split_at(end)
}

fn looks_like_key_piece(s: &str) -> bool {
    !s.is_empty()
        && (s
            .chars()
            .any(|c| c.is_ascii_digit() || c == '_' || c == '-')
            || s.chars().skip(1).any(|c| c.is_ascii_uppercase()))
}

/// A bearer token, not a word: 16 or more characters (a sentence's final
/// `.` not counted) holding both letters and digits. Words, hyphenated
/// names and phrases have no digits; real tokens nearly always do.
fn looks_like_token(t: &str) -> bool {
    let t = t.trim_end_matches('.');
    t.len() >= 16
        && t.chars().any(|c| c.is_ascii_digit())
        && t.chars().any(|c| c.is_ascii_alphabetic())
}

/// The credential values configured under a Hermes home.
#[derive(Debug, Default)]
pub struct Configured {
    pub values: Vec<String>,
    /// Credential settings with a value shorter than [`MIN_SECRET_LEN`].
    pub too_short: usize,
    /// Files that could not be read.
    pub problems: Vec<String>,
}

/// Secret values set in `HERMES_HOME/.env` and `config.yaml`: values of
/// settings that are credentials (see [`secret_setting`]), at least
/// [`MIN_SECRET_LEN`] characters long; spaces are allowed (quoted `.env`
/// values).
pub fn configured_secrets(settings: &HermesSettings) -> Configured {
    let mut out = Configured {
        problems: settings
            .problems
            .iter()
            .map(|(path, why)| format!("{}: {why}; its secrets cannot be redacted", path.display()))
            .collect(),
        ..Configured::default()
    };
    for (name, value) in settings.all_settings() {
        let value = value.trim();
        if !secret_setting(&name)
            || value.is_empty()
            || matches!(
                value.to_ascii_lowercase().as_str(),
                "true" | "false" | "null" | "none" | "~" | "yes" | "no"
            )
            || (value.starts_with("${") && value.ends_with('}'))
        {
            continue;
        }
        if value.chars().count() < MIN_SECRET_LEN {
            out.too_short += 1;
        } else {
            out.values.push(value.to_string());
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
    fn leaks_of_issue_11_are_caught() {
        let cases = [
            (
                "curl https://api.telegram.org/bot7012345678:AAFakeFixtureTokenNotReal-0123456789ab/sendMessage",
                "telegram_bot_token",
                "AAFakeFixture",
            ),
            (
                "token 7012345678:AAFakeFixtureTokenNotReal-01234567-_ end",
                "telegram_bot_token",
                "AAFakeFixture",
            ),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nQyNTUxOQAAACDxyz",
                "private_key",
                "b3BlbnNz",
            ),
            (
                "-----BEGIN PGP PRIVATE KEY BLOCK-----\nVersion: GnuPG v2\n\nlQOYBF0secretPGPbody\n=abcd\n-----END PGP PRIVATE KEY BLOCK-----",
                "private_key",
                "secretPGPbody",
            ),
            (
                "key: sk-proj-abcdefghij0123456789ABCD\nEFGHIJ0123456789wrapped\nand then prose",
                "openai_key",
                "wrapped",
            ),
            ("open file:///home/alex/notes.txt", "home_path", "alex"),
            (
                "db postgres://admin:hunter2secret@db.local:5432/x",
                "url_credentials",
                "hunter2secret",
            ),
            (
                "fetch https://user:pa55word@example.com/",
                "url_credentials",
                "pa55word",
            ),
            (
                "Authorization: Basic dXNlcjpwYXNzd29yZA==",
                "basic_auth",
                "dXNlcjpw",
            ),
            (
                "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "aws_secret_key",
                "wJalrXUtnFEMI",
            ),
            (
                "the secret is wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY.",
                "aws_secret_key",
                "wJalrXUtnFEMI",
            ),
        ];
        for (text, kind, secret) in cases {
            let (out, counts) = red(text);
            assert!(counts.contains_key(kind), "{kind} not counted: {out}");
            assert!(!out.contains(secret), "{kind} leaked: {out}");
        }
        let (out, _) = red("key: sk-proj-abcdefghij0123456789ABCD\nand then prose");
        assert!(out.ends_with("\nand then prose"), "{out}");
        let (out, _) = red(
            "https://api.telegram.org/bot7012345678:AAFakeFixtureTokenNotReal-0123456789ab/sendMessage",
        );
        assert!(
            out.contains("/bot[REDACTED:telegram_bot_token]/sendMessage"),
            "{out}"
        );
    }

    #[test]
    fn ordinary_words_are_not_redacted() {
        for text in [
            "standard bearer responsibilities",
            "basic understanding of the problem",
            "a git sha 0123456789abcdef0123456789abcdef01234567 here",
            "see https://example.com/path and mailto:someone@example.com",
        ] {
            let (out, counts) = red(text);
            assert_eq!(out, text, "{counts:?}");
        }
    }

    #[test]
    fn settings_are_credentials_by_name() {
        for yes in [
            "API_SERVER_KEY",
            "key",
            "api_key",
            "TELEGRAM_BOT_TOKEN",
            "db_password",
            "clientSecret",
            "OPENAI_API_KEY",
        ] {
            assert!(secret_setting(yes), "{yes}");
        }
        for no in [
            "max_tokens",
            "sort_key",
            "timestamp",
            "model",
            "keyboard_layout",
            "API_SERVER_KEY_FILE",
            "public_key",
            "token_budget",
        ] {
            assert!(!secret_setting(no), "{no}");
        }
    }

    #[test]
    fn configured_values_respect_words_and_spaces() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".env"),
            "DB_PASSWORD=hunter\nPHRASE_SECRET=\"correct horse battery\"\nPIN_CODE=abc\nPIN_TOKEN=1234\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("config.yaml"),
            "model:\n  max_tokens: 100000\n  sort_key: timestamp\n",
        )
        .unwrap();
        let mut r = Redactor::new(Some(&HermesSettings::read(dir.path())));
        assert_eq!(r.skipped_short, 1, "PIN_TOKEN=1234 is too short");
        let text = "hunters hunt; hunter! said correct horse battery at timestamp 100000";
        let out = r.text(text).unwrap();
        assert_eq!(
            out,
            "hunters hunt; [REDACTED:configured_secret]! said [REDACTED:configured_secret] at timestamp 100000"
        );
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
        let mut r = Redactor::new(Some(&HermesSettings::read(dir.path())));
        let out = r
            .text("x plain-secret-value-42 y another-one-99 fake-model-1")
            .unwrap();
        assert_eq!(
            out,
            "x [REDACTED:configured_secret] y [REDACTED:configured_secret] fake-model-1"
        );
    }

    /// The corpus under `fixtures/redaction/`: every planted secret found
    /// (and gone from the output), no ordinary line changed. Prints the
    /// figures docs/redaction-and-hardening.md quotes (`cargo test --lib redaction_corpus --
    /// --nocapture`).
    #[test]
    fn redaction_corpus() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/redaction");
        let planted = std::fs::read_to_string(dir.join("planted.tsv")).unwrap();
        let mut r = Redactor::new(None);
        let mut red = |s: &str| {
            let (out, counted) = r.counted(s);
            let kinds: BTreeMap<&'static str, usize> = counted.into_iter().collect();
            (out.unwrap_or_else(|| s.to_string()), kinds)
        };
        let (mut total, mut found, mut missed) = (0, 0, Vec::new());
        for line in planted.lines().filter(|l| !l.starts_with('#')) {
            let mut cols = line.split('\t');
            let (kind, text, secret) = (
                cols.next().unwrap(),
                cols.next().unwrap().replace("\\n", "\n"),
                cols.next().unwrap(),
            );
            total += 1;
            let (out, counts) = red(&text);
            if counts.contains_key(kind) && !out.contains(secret) {
                found += 1;
            } else {
                missed.push(format!("{kind}: {out}"));
            }
        }
        let ordinary = std::fs::read_to_string(dir.join("ordinary.txt")).unwrap();
        let (mut lines, mut changed) = (0, Vec::new());
        for line in ordinary.lines().filter(|l| !l.starts_with('#')) {
            lines += 1;
            let (out, _) = red(line);
            if out != line {
                changed.push(out);
            }
        }
        println!(
            "redaction corpus: {found} of {total} planted secrets found; {} of {lines} ordinary lines changed",
            changed.len()
        );
        assert!(missed.is_empty(), "missed: {missed:#?}");
        assert!(changed.is_empty(), "false positives: {changed:#?}");
    }

    #[test]
    fn secrets_as_json_keys_are_redacted() {
        let mut r = Redactor::new(None);
        let mut v: Value = serde_json::from_str(
            r#"{"tokens":{"ghp_abcdefghijklmnopqrstuvwxyz0123456789AB":"alice"},"b":1}"#,
        )
        .unwrap();
        r.value(&mut v);
        assert_eq!(
            v.to_string(),
            r#"{"tokens":{"[REDACTED:github_token]":"alice"},"b":1}"#
        );
    }

    #[test]
    fn credential_names_of_round_3() {
        for yes in [
            "SMTP_PASS",
            "HERMES_API_KEYS",
            "SECRET_KEY_BASE",
            "OPENAI_API_KEY_2",
            "tokens",
            "DB_PASSWORDS",
            "client_secret_value",
        ] {
            assert!(secret_setting(yes), "{yes}");
        }
        for no in [
            "max_tokens",
            "PASSWORD_FILE",
            "password_min_length",
            "special_tokens",
        ] {
            assert!(!secret_setting(no), "{no}");
        }
    }

    #[test]
    fn config_lists_and_expanded_variables_are_redacted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".env"),
            "SMTP_PASS=smtp-pass-value-1\nHERMES_API_KEYS=keys-value-22\nSECRET_KEY_BASE=base-value-333\nOPENAI_API_KEY_2=second-key-4444\nMY_UPSTREAM=upstream-value-55555\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("config.yaml"),
            "gateway:\n  tokens:\n    - list-token-one-1\n    - list-token-two-2\nmodel:\n  api_key: ${MY_UPSTREAM}\n",
        )
        .unwrap();
        let mut r = Redactor::new(Some(&HermesSettings::read(dir.path())));
        for secret in [
            "smtp-pass-value-1",
            "keys-value-22",
            "base-value-333",
            "second-key-4444",
            "list-token-one-1",
            "list-token-two-2",
            "upstream-value-55555",
        ] {
            let out = r.text(&format!("x {secret} y")).unwrap_or_default();
            assert_eq!(out, "x [REDACTED:configured_secret] y", "{secret}");
        }
    }
}
