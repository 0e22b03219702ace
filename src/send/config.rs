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
//! The files are read by [`HermesSettings`]; one that cannot be read or
//! parsed stops `send` (Hermes would not start with it either).

use std::fmt;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::hermes_settings::HermesSettings;

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
    /// Plain `http://` to a host other than this machine (loopback
    /// addresses and `localhost`): the key would cross a network in the
    /// clear.
    pub fn cleartext_beyond_loopback(&self) -> bool {
        let Some(rest) = self.base.strip_prefix("http://") else {
            return false;
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
        };
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        !loopback
    }

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
    let settings = home.map(HermesSettings::read).unwrap_or_default();
    if let Some((path, why)) = settings.problems.first() {
        bail!("reading {}: {why}", path.display());
    }
    let from_dotenv = |name: &str| {
        settings
            .env(name)
            .filter(|v| !v.trim().is_empty())
            .map(str::to_owned)
    };
    let from_yaml = |leaf: &str| {
        settings
            .config_value(&["platforms", "api_server", "extra", leaf])
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

/// Checks an `http://` or `https://` base URL and drops trailing slashes.
pub fn normalize_url(url: &str) -> Result<String> {
    let url = url.trim().trim_end_matches('/');
    let authority = url.split_once("://").map_or(url, |(_, rest)| rest);
    if authority.split('/').next().is_some_and(|a| a.contains('@')) {
        // Never echo it: the part before '@' may be a secret.
        bail!("credentials in the URL are not supported; set API_SERVER_KEY instead");
    }
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        bail!("{url:?} is not an http:// or https:// URL (expected e.g. http://127.0.0.1:8642)");
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::hermes_settings::scratch_home as home;

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
        assert!(resolve(Some("ftp://x"), &EnvVars::default(), None).is_err());
        let tls = resolve(
            Some("https://mac.tailnet.ts.net/"),
            &EnvVars::default(),
            None,
        )
        .unwrap();
        assert_eq!(tls.base, "https://mac.tailnet.ts.net");
        assert!(!tls.cleartext_beyond_loopback());
        for (url, beyond) in [
            ("http://127.0.0.1:8642", false),
            ("http://127.9.9.9:1", false),
            ("http://localhost:1", false),
            ("http://[::1]:8642", false),
            ("http://10.0.0.5:8642", true),
            ("http://mac.local:8642/v1", true),
            ("http://[fd7a::1]:8642", true),
        ] {
            let ep = resolve(Some(url), &EnvVars::default(), None).unwrap();
            assert_eq!(ep.cleartext_beyond_loopback(), beyond, "{url}");
        }
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
}
