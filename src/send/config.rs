//! Where to send, and with which key: flags, then the environment, then the
//! API server's own settings in `HERMES_HOME/.env` and `config.yaml`.
//!
//! Hermes itself lets the `API_SERVER_*` environment variables (its `.env`
//! is loaded into the environment) override `platforms.api_server.extra` in
//! `config.yaml`; the same order is used here:
//!
//! - URL: `--url`, `$HERMES_API_URL`, then `http://HOST:PORT` from
//!   `$API_SERVER_HOST`/`$API_SERVER_PORT`, `.env`, `config.yaml`
//!   (`platforms.api_server.extra.host` / `.port`), defaults `127.0.0.1`
//!   and `8642`.
//! - Key: `$API_SERVER_KEY`, `.env` `API_SERVER_KEY`, `config.yaml`
//!   `platforms.api_server.extra.key`. There is no flag: a key on the command
//!   line would show in `ps` and shell history.
//!
//! Only those few keys are read, so instead of a YAML dependency there is a
//! small reader for block mappings (plus one-line flow mappings) in
//! [`yaml_lookup`].

use std::fmt;
use std::path::Path;

use anyhow::{Context, Result, bail};

pub const DEFAULT_HOST: &str = "127.0.0.1";
pub const DEFAULT_PORT: u16 = 8642;

/// The bearer key. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(value: impl Into<String>) -> ApiKey {
        ApiKey(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Where the key came from, for error messages (never the key itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    Env,
    DotEnv,
    ConfigYaml,
}

impl KeySource {
    pub fn describe(self) -> &'static str {
        match self {
            KeySource::Env => "$API_SERVER_KEY",
            KeySource::DotEnv => "API_SERVER_KEY in HERMES_HOME/.env",
            KeySource::ConfigYaml => "platforms.api_server.extra.key in HERMES_HOME/config.yaml",
        }
    }
}

/// The resolved endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:8642`.
    pub base: String,
    pub key: Option<(ApiKey, KeySource)>,
}

impl Endpoint {
    pub fn completions_url(&self) -> String {
        if self.base.ends_with("/v1") {
            format!("{}/chat/completions", self.base)
        } else {
            format!("{}/v1/chat/completions", self.base)
        }
    }
}

/// What the environment holds that matters here (a seam for tests).
#[derive(Debug, Default, Clone)]
pub struct EnvVars {
    pub api_url: Option<String>,
    pub key: Option<String>,
    pub host: Option<String>,
    pub port: Option<String>,
}

impl EnvVars {
    pub fn from_process() -> EnvVars {
        let get = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        EnvVars {
            api_url: get("HERMES_API_URL"),
            key: get("API_SERVER_KEY"),
            host: get("API_SERVER_HOST"),
            port: get("API_SERVER_PORT"),
        }
    }
}

/// Resolves URL and key. `home` is the Hermes home directory, if it exists.
pub fn resolve(url_flag: Option<&str>, env: &EnvVars, home: Option<&Path>) -> Result<Endpoint> {
    let dotenv = match home {
        Some(dir) => read_optional(&dir.join(".env"))?
            .map(|text| parse_dotenv(&text))
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let yaml = match home {
        Some(dir) => read_optional(&dir.join("config.yaml"))?,
        None => None,
    };
    let from_dotenv = |name: &str| {
        dotenv
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.trim().is_empty())
    };
    let from_yaml = |leaf: &str| {
        yaml.as_deref()
            .and_then(|text| yaml_lookup(text, &["platforms", "api_server", "extra", leaf]))
            .map(|v| expand_vars(&v, &dotenv))
            .filter(|v| !v.trim().is_empty())
    };

    let base = if let Some(url) = url_flag {
        normalize_url(url).context("--url")?
    } else if let Some(url) = &env.api_url {
        normalize_url(url).context("$HERMES_API_URL")?
    } else {
        let host = env
            .host
            .clone()
            .or_else(|| from_dotenv("API_SERVER_HOST"))
            .or_else(|| from_yaml("host"))
            .unwrap_or_else(|| DEFAULT_HOST.to_owned());
        let port_text = env
            .port
            .clone()
            .or_else(|| from_dotenv("API_SERVER_PORT"))
            .or_else(|| from_yaml("port"));
        let port = match port_text {
            Some(p) => p.trim().parse::<u16>().ok().filter(|p| *p != 0).with_context(|| {
                format!("the API server port {p:?} in the Hermes settings is not a port number; pass --url")
            })?,
            None => DEFAULT_PORT,
        };
        format!("http://{}:{port}", connect_host(host.trim()))
    };

    let key = if let Some(k) = env.key.clone() {
        Some((ApiKey::new(k.trim()), KeySource::Env))
    } else if let Some(k) = from_dotenv("API_SERVER_KEY") {
        Some((ApiKey::new(k.trim()), KeySource::DotEnv))
    } else {
        from_yaml("key").map(|k| (ApiKey::new(k.trim()), KeySource::ConfigYaml))
    };
    Ok(Endpoint { base, key })
}

/// A settings file: only a regular file, and only a small one (a FIFO or a
/// link to a device must not hang or flood `send`).
fn read_optional(path: &Path) -> Result<Option<String>> {
    match crate::safe_io::read_optional(path, crate::safe_io::MAX_SETTINGS_BYTES) {
        Ok(Some(bytes)) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Ok(None) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// A listen address is not something to connect to: `0.0.0.0` and `::`
/// mean "this machine".
fn connect_host(host: &str) -> String {
    match host {
        "" | "0.0.0.0" => DEFAULT_HOST.to_owned(),
        "::" | "[::]" => "[::1]".to_owned(),
        h if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
        h => h.to_owned(),
    }
}

/// Checks an `http://` base URL and drops trailing slashes.
pub fn normalize_url(url: &str) -> Result<String> {
    let url = url.trim().trim_end_matches('/');
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
    if authority.split('/').next().is_some_and(|a| a.contains('@')) {
        // Never echo it: the part before '@' may be a secret.
        bail!("credentials in the URL are not supported; set API_SERVER_KEY instead");
    }
    let Some(rest) = url.strip_prefix("http://") else {
        if url.starts_with("https://") {
            bail!(
                "{url:?}: https is not supported; the API server listens on plain http (use http://HOST:PORT)"
            );
        }
        bail!("{url:?} is not an http:// URL (expected e.g. http://127.0.0.1:8642)");
    };
    if rest.is_empty() || rest.starts_with('/') {
        bail!("{url:?} has no host");
    }
    let uri = ureq::http::Uri::try_from(url)
        .map_err(|e| anyhow::anyhow!("{url:?} is not a valid URL ({e})"))?;
    if uri.host().is_none_or(str::is_empty) {
        bail!("{url:?} has no host");
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if let Some((_, port)) = authority.rsplit_once(':')
        && !authority.ends_with(']')
        && port.parse::<u16>().ok().filter(|p| *p != 0).is_none()
    {
        bail!("{url:?}: {port:?} is not a port number (1-65535)");
    }
    Ok(url.to_owned())
}

/// `${VAR}` in config values, as Hermes expands them (environment first,
/// then `.env`); unknown references stay verbatim.
fn expand_vars(value: &str, dotenv: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = &after[..end];
        let found = std::env::var(name).ok().or_else(|| {
            dotenv
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        });
        match found {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[start..start + 2 + end + 1]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Parses a dotenv file the way python-dotenv reads the simple cases:
/// `KEY=value`, `export KEY=value`, single or double quotes, `#` comments
/// (a `#` starts a comment in an unquoted value only after whitespace).
pub fn parse_dotenv(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = text.trim_start_matches('\u{feff}').lines();
    while let Some(line) = lines.next() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            continue;
        }
        let raw = raw.trim_start();
        let value = if let Some(body) = raw.strip_prefix('"') {
            // Double quotes may span lines and know a few escapes.
            let mut acc = body.to_owned();
            let mut closed = find_closing_quote(&acc, '"');
            while closed.is_none() {
                match lines.next() {
                    Some(next) => {
                        acc.push('\n');
                        acc.push_str(next);
                        closed = find_closing_quote(&acc, '"');
                    }
                    None => break,
                }
            }
            let inner = closed.map_or(acc.as_str(), |end| &acc[..end]);
            unescape_double(inner)
        } else if let Some(body) = raw.strip_prefix('\'') {
            match body.find('\'') {
                Some(end) => body[..end].to_owned(),
                None => body.to_owned(),
            }
        } else {
            strip_inline_comment(raw).trim_end().to_owned()
        };
        out.push((key.to_owned(), value));
    }
    out
}

fn find_closing_quote(s: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' && quote == '"' {
            escaped = true;
        } else if c == quote {
            return Some(i);
        }
    }
    None
}

fn unescape_double(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('\'') => out.push('\''),
            Some('0') => out.push('\0'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Cuts an unquoted value at a `#` that follows whitespace (or starts it).
fn strip_inline_comment(value: &str) -> &str {
    let mut prev_space = true;
    for (i, c) in value.char_indices() {
        if c == '#' && prev_space {
            return &value[..i];
        }
        prev_space = c == ' ' || c == '\t';
    }
    value
}

/// The scalar at `path` (nested mapping keys) in a YAML document, as text.
///
/// Understands block mappings nested by indentation, plain / single-quoted
/// / double-quoted scalars, comments, `---`, and a one-line flow mapping
/// (`extra: {host: 127.0.0.1, port: 8642}`) as the value of a key on the
/// path. Sequences and block scalars are skipped. Returns `None` when the
/// path is absent or does not end at a scalar (`null` / `~` count as absent).
pub fn yaml_lookup(text: &str, path: &[&str]) -> Option<String> {
    // The chain of (indent, key) of the block mappings we are inside.
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut found = None;
    // Indentation of a block scalar or multi-line value being skipped.
    let mut skip_deeper_than: Option<usize> = None;
    for raw in text.trim_start_matches('\u{feff}').lines() {
        let content = raw.trim_end();
        let trimmed = content.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = content.len() - trimmed.len();
        if let Some(limit) = skip_deeper_than {
            if indent > limit {
                continue;
            }
            skip_deeper_than = None;
        }
        if indent == 0 && (trimmed == "---" || trimmed == "..." || trimmed.starts_with("--- ")) {
            stack.clear();
            continue;
        }
        if trimmed.starts_with("- ") || trimmed == "-" {
            // A sequence item: nothing on our path lives in a sequence.
            skip_deeper_than = Some(indent);
            continue;
        }
        let Some((key, value)) = split_key(trimmed) else {
            continue;
        };
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        let depth = stack.len();
        let on_path = depth < path.len()
            && stack.iter().zip(path).all(|((_, k), want)| k == want)
            && key == path[depth];
        let value = strip_yaml_comment(value).trim();
        if value.is_empty() {
            stack.push((indent, key));
            continue;
        }
        if value.starts_with('|') || value.starts_with('>') {
            if on_path && depth + 1 == path.len() {
                // A block scalar: not something these settings use.
                found = None;
            }
            skip_deeper_than = Some(indent);
            continue;
        }
        if !on_path {
            continue;
        }
        if depth + 1 == path.len() {
            found = yaml_scalar(value);
        } else if value.starts_with('{') {
            found = flow_lookup(value, &path[depth + 1..]).or(found);
        }
    }
    found
}

/// `key: rest` → (key, rest); the key may be quoted.
fn split_key(line: &str) -> Option<(String, &str)> {
    if let Some(q) = line.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let end = find_closing_quote(&line[1..], q)? + 1;
        let key = if q == '"' {
            unescape_double(&line[1..end])
        } else {
            line[1..end].replace("''", "'")
        };
        let rest = line[end + 1..].trim_start().strip_prefix(':')?;
        if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
            return None;
        }
        return Some((key, rest));
    }
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b':' && (i + 1 == bytes.len() || bytes[i + 1] == b' ' || bytes[i + 1] == b'\t') {
            return Some((line[..i].trim_end().to_owned(), &line[i + 1..]));
        }
        if b == b'#' && i > 0 && bytes[i - 1] == b' ' {
            return None;
        }
    }
    None
}

/// Removes a trailing `# comment` outside quotes.
fn strip_yaml_comment(value: &str) -> &str {
    let mut in_single = false;
    let mut in_double = false;
    let mut prev_space = true;
    let mut escaped = false;
    for (i, c) in value.char_indices() {
        if in_double {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_double = false;
            }
        } else if in_single {
            if c == '\'' {
                in_single = false;
            }
        } else if c == '#' && prev_space {
            return &value[..i];
        } else if c == '"' && prev_space {
            in_double = true;
        } else if c == '\'' && prev_space {
            in_single = true;
        }
        prev_space = c == ' ' || c == '\t' || c == '{' || c == ',' || c == '[';
    }
    value
}

/// A scalar as text: quotes removed; `null`/`~` → None.
fn yaml_scalar(value: &str) -> Option<String> {
    let value = value.trim();
    if let Some(body) = value.strip_prefix('"') {
        let end = find_closing_quote(body, '"').unwrap_or(body.len());
        return Some(unescape_double(&body[..end]));
    }
    if let Some(body) = value.strip_prefix('\'') {
        let body = body.strip_suffix('\'').unwrap_or(body);
        return Some(body.replace("''", "'"));
    }
    if value.starts_with(['{', '[', '&', '*', '!']) {
        return None;
    }
    match value {
        "" | "~" | "null" | "Null" | "NULL" => None,
        v => Some(v.to_owned()),
    }
}

/// Looks `path` up inside a one-line flow mapping `{a: 1, b: {c: 2}}`.
fn flow_lookup(text: &str, path: &[&str]) -> Option<String> {
    let inner = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    for item in split_flow(inner) {
        let (key, value) = split_key(item.trim()).or_else(|| {
            let (k, v) = item.split_once(':')?;
            Some((k.trim().to_owned(), v))
        })?;
        let key = yaml_scalar(&key).unwrap_or(key);
        if key != path[0] {
            continue;
        }
        let value = value.trim();
        return if path.len() == 1 {
            yaml_scalar(value)
        } else {
            flow_lookup(value, &path[1..])
        };
    }
    None
}

/// Splits flow-mapping items on top-level commas.
fn split_flow(s: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    let (mut in_single, mut in_double) = (false, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' if !in_single => in_double = !in_double,
            '\'' if !in_double => in_single = !in_single,
            '{' | '[' if !in_single && !in_double => depth += 1,
            '}' | ']' if !in_single && !in_double => depth -= 1,
            ',' if depth == 0 && !in_single && !in_double => {
                items.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&s[start..]);
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: [&str; 4] = ["platforms", "api_server", "extra", "port"];

    #[test]
    fn yaml_block_mapping() {
        let text = "\
# config
model:
  provider: custom
  base_url: http://127.0.0.1:18080/v1  # the fake
  extra:
    port: 1
platforms:
  telegram:
    extra:
      port: 2
  api_server:
    enabled: true
    extra:
      host: '0.0.0.0'
      port: 9000   # comment
      key: \"ci-test-key-0123456789abcdef\"
      cors_origins:
        - http://a
        - http://b
  webhook:
    extra:
      port: 3
sessions:
  write_json_snapshots: true
";
        assert_eq!(yaml_lookup(text, &PATH).as_deref(), Some("9000"));
        assert_eq!(
            yaml_lookup(text, &["platforms", "api_server", "extra", "host"]).as_deref(),
            Some("0.0.0.0")
        );
        assert_eq!(
            yaml_lookup(text, &["platforms", "api_server", "extra", "key"]).as_deref(),
            Some("ci-test-key-0123456789abcdef")
        );
        assert_eq!(
            yaml_lookup(text, &["model", "base_url"]).as_deref(),
            Some("http://127.0.0.1:18080/v1")
        );
        assert_eq!(
            yaml_lookup(text, &["platforms", "api_server", "extra", "nope"]),
            None
        );
    }

    #[test]
    fn yaml_other_shapes() {
        let flow = "platforms:\n  api_server: {enabled: true, extra: {host: \"::\", port: 8700, key: 'a#b'}}\n";
        assert_eq!(yaml_lookup(flow, &PATH).as_deref(), Some("8700"));
        assert_eq!(
            yaml_lookup(flow, &["platforms", "api_server", "extra", "key"]).as_deref(),
            Some("a#b")
        );
        let tabs_and_quotes =
            "---\n\"platforms\":\n    'api_server':\n        extra:\n            port: \"8643\"\n";
        assert_eq!(yaml_lookup(tabs_and_quotes, &PATH).as_deref(), Some("8643"));
        let null = "platforms:\n  api_server:\n    extra:\n      port: ~\n";
        assert_eq!(yaml_lookup(null, &PATH), None);
        let block =
            "platforms:\n  api_server:\n    extra:\n      key: |\n        port: 1\n      port: 5\n";
        assert_eq!(yaml_lookup(block, &PATH).as_deref(), Some("5"));
        // A key of the same name at a shallower level does not match.
        let shallow = "platforms:\n  port: 1\n  api_server:\n    port: 2\n";
        assert_eq!(yaml_lookup(shallow, &PATH), None);
    }

    #[test]
    fn dotenv_forms() {
        let text = "\
# comment
export API_SERVER_KEY=abc # trailing
API_SERVER_HOST=\"127.0.0.2\"
API_SERVER_PORT='8650'
EMPTY=
HASH=a#b
MULTI=\"line1
line2\"
not a line
";
        let vars = parse_dotenv(text);
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("API_SERVER_KEY"), Some("abc"));
        assert_eq!(get("API_SERVER_HOST"), Some("127.0.0.2"));
        assert_eq!(get("API_SERVER_PORT"), Some("8650"));
        assert_eq!(get("EMPTY"), Some(""));
        assert_eq!(get("HASH"), Some("a#b"));
        assert_eq!(get("MULTI"), Some("line1\nline2"));
    }

    fn home(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn resolution_order() {
        let yaml = "platforms:\n  api_server:\n    extra:\n      host: 0.0.0.0\n      port: 9001\n      key: from-yaml-0123456789\n";
        let dir = home(&[("config.yaml", yaml)]);
        let none = EnvVars::default();

        let ep = resolve(None, &none, Some(dir.path())).unwrap();
        assert_eq!(ep.base, "http://127.0.0.1:9001");
        let (key, src) = ep.key.unwrap();
        assert_eq!(
            (key.expose(), src),
            ("from-yaml-0123456789", KeySource::ConfigYaml)
        );

        std::fs::write(
            dir.path().join(".env"),
            "API_SERVER_PORT=9002\nAPI_SERVER_KEY=from-dotenv\n",
        )
        .unwrap();
        let ep = resolve(None, &none, Some(dir.path())).unwrap();
        assert_eq!(ep.base, "http://127.0.0.1:9002");
        assert_eq!(ep.key.unwrap().1, KeySource::DotEnv);

        let env = EnvVars {
            port: Some("9003".into()),
            key: Some("from-env".into()),
            ..EnvVars::default()
        };
        let ep = resolve(None, &env, Some(dir.path())).unwrap();
        assert_eq!(ep.base, "http://127.0.0.1:9003");
        assert_eq!(ep.key.unwrap().0.expose(), "from-env");

        let env = EnvVars {
            api_url: Some("http://10.0.0.1:1/".into()),
            ..env
        };
        let ep = resolve(None, &env, Some(dir.path())).unwrap();
        assert_eq!(ep.base, "http://10.0.0.1:1");
        let ep = resolve(Some("http://localhost:7/v1/"), &env, Some(dir.path())).unwrap();
        assert_eq!(
            ep.completions_url(),
            "http://localhost:7/v1/chat/completions"
        );

        let ep = resolve(None, &none, None).unwrap();
        assert_eq!(ep.base, "http://127.0.0.1:8642");
        assert!(ep.key.is_none());
        assert_eq!(
            ep.completions_url(),
            "http://127.0.0.1:8642/v1/chat/completions"
        );
    }

    #[test]
    fn bad_settings() {
        assert!(resolve(Some("https://x"), &EnvVars::default(), None).is_err());
        assert!(resolve(Some("127.0.0.1:8642"), &EnvVars::default(), None).is_err());
        let err = resolve(Some("http://u:sekrit@h:1"), &EnvVars::default(), None).unwrap_err();
        assert!(!format!("{err:#}").contains("sekrit"));
        let dir = home(&[(".env", "API_SERVER_PORT=eighty\n")]);
        let err = resolve(None, &EnvVars::default(), Some(dir.path())).unwrap_err();
        assert!(format!("{err:#}").contains("--url"));
    }

    #[test]
    fn key_debug_is_redacted() {
        let key = ApiKey::new("secret-value");
        assert!(!format!("{key:?}").contains("secret"));
    }

    #[test]
    fn yaml_expands_vars_from_dotenv() {
        let yaml = "platforms:\n  api_server:\n    extra:\n      key: ${HH_TEST_UNSET_VAR_X}\n      port: ${HH_PORT_FROM_DOTENV}\n";
        let dir = home(&[
            ("config.yaml", yaml),
            (".env", "HH_PORT_FROM_DOTENV=9100\n"),
        ]);
        let ep = resolve(None, &EnvVars::default(), Some(dir.path())).unwrap();
        assert_eq!(ep.base, "http://127.0.0.1:9100");
        assert_eq!(ep.key.unwrap().0.expose(), "${HH_TEST_UNSET_VAR_X}");
    }
}
