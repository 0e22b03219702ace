//! The one HTTP call: POST the turn to `/v1/chat/completions`, and turn
//! every way it can fail into a one-line message with its own exit code.
//!
//! | what happened | exit |
//! | --- | --- |
//! | connection refused, host not found, nothing listening | 10 (`UNREACHABLE`) |
//! | HTTP 401 / 403 | 11 (`AUTH`) |
//! | HTTP 429 | 12 (`RATE_LIMITED`) |
//! | HTTP 5xx, any other non-2xx, connection dropped mid-reply | 13 (`SERVER`) |
//! | no complete reply within `--timeout` | 14 (`TIMEOUT`) |
//! | a 2xx whose body is not a chat completion with `choices[0].message.content`, headers over 64 KB, a compressed body nobody asked for | 15 (`BAD_REPLY`) |
//! | TLS: the certificate is not trusted, the handshake fails | 17 (`TLS`) |
//!
//! `https://` goes through rustls. The roots are the system's (through
//! rustls-platform-verifier, so a CA the administrator installed, a
//! corporate proxy's, counts as it does for curl), or exactly the
//! certificates of `--cacert FILE` for a private CA.

use std::io::ErrorKind;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};

use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

use super::config::{Endpoint, KeySource};
use crate::exit::{self, Failure};

/// The model name the API server advertises by default.
pub const MODEL: &str = "hermes-agent";
/// The header that names the Hermes session.
pub const SESSION_HEADER: &str = "X-Hermes-Session-Id";
/// Longest wait for the TCP connection, whatever `--timeout` says.
const MAX_CONNECT: Duration = Duration::from_secs(10);
/// Largest response body accepted.
const MAX_BODY: u64 = 16 * 1024 * 1024;

/// A successful reply.
#[derive(Debug)]
pub struct Reply {
    /// The response body as received.
    pub raw: String,
    /// `choices[0].message.content`.
    pub text: String,
    /// The session id the server echoed, if it did.
    pub session_id: Option<String>,
}

/// The request body for one user turn.
pub fn request_body(turn: &str) -> Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": turn}],
        "stream": false,
    })
}

/// Which certificates an `https://` URL must chain to.
#[derive(Debug, Clone, Default)]
pub enum Roots {
    /// The system's trust store.
    #[default]
    System,
    /// Only these (`--cacert`).
    Only(Vec<Certificate<'static>>),
}

impl Roots {
    /// The CA certificates of a PEM file (`--cacert`); a file with none,
    /// or one that is no regular file, is a usage error.
    pub fn from_pem_file(path: &Path) -> Result<Roots> {
        let usage =
            |why: String| Failure::new(exit::USAGE, format!("--cacert {}: {why}", path.display()));
        let bytes = crate::safe_io::read_regular(path, crate::safe_io::MAX_SETTINGS_BYTES)
            .map_err(|e| usage(e.to_string()))?;
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(&bytes) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
                Ok(_) => {}
                Err(e) => return Err(usage(format!("not valid PEM ({e})")).into()),
            }
        }
        if certs.is_empty() {
            return Err(
                usage("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into()).into(),
            );
        }
        Ok(Roots::Only(certs))
    }

    fn tls_config(&self) -> TlsConfig {
        let roots = match self {
            Roots::System => RootCerts::PlatformVerifier,
            Roots::Only(certs) => RootCerts::new_with_certs(certs),
        };
        TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(roots)
            .build()
    }
}

/// Largest response head accepted (ureq's own limit).
const MAX_HEADERS: usize = 64 * 1024;

/// POSTs `turn` into `session`. Errors are [`Failure`]s with the exit code
/// of the table above; their messages never contain the key.
pub fn post(
    endpoint: &Endpoint,
    roots: &Roots,
    session: &str,
    turn: &str,
    timeout: Duration,
) -> Result<Reply> {
    let url = endpoint.completions_url();
    let agent = agent(roots, timeout);
    let body = serde_json::to_vec(&request_body(turn))?;
    let mut request = agent
        .post(&url)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json")
        .header(SESSION_HEADER, session);
    if let Some((key, _)) = &endpoint.key {
        request = request.header("Authorization", format!("Bearer {}", key.expose()));
    }
    let secret = endpoint.key.as_ref().map(|(k, _)| k.expose());
    let response = match request.send(&body[..]) {
        Ok(r) => r,
        Err(e) => return Err(transport_failure(e, &endpoint.base, timeout, secret).into()),
    };
    let status = response.status().as_u16();
    let session_id = response
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let retry_after = response
        .headers()
        .get("Retry-After")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(f) = unasked_encoding(&response, &endpoint.base, secret) {
        return Err(f.into());
    }
    let read = response
        .into_body()
        .with_config()
        .limit(MAX_BODY)
        .read_to_string();
    if !(200..300).contains(&status) {
        // The error body is only decoration; a failure to read it is not
        // worth more than the status.
        let text = read.unwrap_or_default();
        return Err(status_failure(status, &text, retry_after.as_deref(), endpoint, secret).into());
    }
    let raw = match read {
        Ok(t) => t,
        Err(e) => return Err(transport_failure(e, &endpoint.base, timeout, secret).into()),
    };
    let text = reply_text(&raw).map_err(|why| {
        let raw = redact(&raw, secret);
        Failure::new(
            exit::BAD_REPLY,
            redact(
                &format!(
                    "{} answered HTTP {status} but {why}: {}; is --url pointing at the Hermes API server?",
                    endpoint.base,
                    snippet(&raw)
                ),
                secret,
            ),
        )
    })?;
    // A server that echoes the key must not make us print it.
    Ok(Reply {
        raw: redact(&raw, secret),
        text: redact(&text, secret),
        session_id,
    })
}

/// One agent per call: no redirects, no proxy, the TLS roots given.
fn agent(roots: &Roots, timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .tls_config(roots.tls_config())
        .max_response_header_size(MAX_HEADERS)
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .timeout_connect(Some(timeout.min(MAX_CONNECT)))
        .timeout_global(Some(timeout))
        .user_agent(concat!("hermes-harvest/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// A compressed body: nothing asks for one (no Accept-Encoding, no decoder
/// built in), so it is no chat completion.
fn unasked_encoding(
    response: &ureq::http::Response<ureq::Body>,
    base: &str,
    secret: Option<&str>,
) -> Option<Failure> {
    let enc = response
        .headers()
        .get("Content-Encoding")
        .and_then(|v| v.to_str().ok())
        .filter(|e| !e.trim().eq_ignore_ascii_case("identity"))?;
    let message = format!(
        "{base} answered HTTP {} with a {}-encoded body that was not asked for; is --url pointing at the Hermes API server (a proxy in between may compress)?",
        response.status().as_u16(),
        crate::report::clean(enc.trim())
    );
    Some(Failure::new(exit::BAD_REPLY, redact(&message, secret)))
}

/// `choices[0].message.content` of a chat completion.
pub fn reply_text(raw: &str) -> Result<String, &'static str> {
    let value: Value = serde_json::from_str(raw).map_err(|_| "the body is not JSON")?;
    let message = value
        .get("choices")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("message"))
        .ok_or("the body has no choices[0].message")?;
    match message.get("content") {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err("the body has no choices[0].message.content text"),
    }
}

fn transport_failure(
    e: ureq::Error,
    base: &str,
    timeout: Duration,
    secret: Option<&str>,
) -> Failure {
    let unreachable = |why: &str| {
        Failure::new(
            exit::UNREACHABLE,
            format!(
                "cannot reach the Hermes API server at {base} ({why}): is `hermes gateway run` running with the API server enabled (platforms.api_server.enabled / API_SERVER_ENABLED=true)? check --url or HERMES_API_URL"
            ),
        )
    };
    let timed_out = || {
        Failure::new(
            exit::TIMEOUT,
            format!(
                "no reply from the Hermes API server at {base} within {} s: the model behind Hermes may be slow or stuck; check Hermes's logs or raise --timeout",
                timeout.as_secs()
            ),
        )
    };
    if let Some(why) = tls_problem(&e) {
        return Failure::new(
            exit::TLS,
            redact(
                &format!(
                    "TLS with {base} failed: {why}; for a private CA pass --cacert FILE (the CA's PEM certificate), and check that the URL's host is the one the certificate names"
                ),
                secret,
            ),
        );
    }
    let failure = match e {
        ureq::Error::LargeResponseHeader(got, limit) => Failure::new(
            exit::BAD_REPLY,
            format!(
                "{base} answered with response headers of more than {limit} bytes ({got}); is --url pointing at the Hermes API server?"
            ),
        ),
        ureq::Error::Timeout(_) => timed_out(),
        ureq::Error::HostNotFound => unreachable("host not found"),
        ureq::Error::ConnectionFailed => unreachable("connection failed"),
        ureq::Error::Io(io) => match io.kind() {
            ErrorKind::TimedOut | ErrorKind::WouldBlock => timed_out(),
            ErrorKind::ConnectionRefused => unreachable("connection refused"),
            ErrorKind::AddrNotAvailable
            | ErrorKind::NetworkUnreachable
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkDown
            | ErrorKind::NotFound => unreachable(&io.to_string()),
            _ => io_failure(&io, base),
        },
        ureq::Error::Protocol(p) => Failure::new(
            exit::BAD_REPLY,
            format!(
                "{base} did not answer with valid HTTP ({p}); is --url pointing at the Hermes API server?"
            ),
        ),
        ureq::Error::BadUri(u) => Failure::new(
            exit::USAGE,
            format!("bad API server URL {u:?}: use e.g. --url http://127.0.0.1:8642"),
        ),
        ureq::Error::BodyExceedsLimit(_) => Failure::new(
            exit::BAD_REPLY,
            format!("the reply from {base} is larger than {MAX_BODY} bytes"),
        ),
        other => Failure::new(
            exit::ERROR,
            format!("sending to the Hermes API server at {base} failed: {other}"),
        ),
    };
    Failure::new(failure.code, redact(&failure.message, secret))
}

/// A reply that is not text, or a connection dropped mid-reply.
fn io_failure(io: &std::io::Error, base: &str) -> Failure {
    if io.kind() == ErrorKind::InvalidData {
        return Failure::new(
            exit::BAD_REPLY,
            format!(
                "the reply from {base} is not UTF-8 text ({io}); is --url pointing at the Hermes API server?"
            ),
        );
    }
    Failure::new(
        exit::SERVER,
        format!(
            "the Hermes API server at {base} dropped the connection before a complete reply ({io}); check Hermes's gateway log"
        ),
    )
}

/// What went wrong in TLS, if the error is a TLS one (rustls errors come
/// wrapped in I/O errors).
fn tls_problem(e: &ureq::Error) -> Option<String> {
    let describe = |r: &rustls::Error| match r {
        rustls::Error::InvalidCertificate(c) => {
            format!("the server's certificate is not trusted ({c:?})")
        }
        other => other.to_string(),
    };
    match e {
        ureq::Error::Rustls(r) => Some(describe(r)),
        ureq::Error::Tls(t) => Some((*t).to_string()),
        ureq::Error::Pem(p) => Some(format!("bad certificate data ({p})")),
        ureq::Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map(describe),
        _ => None,
    }
}

fn status_failure(
    status: u16,
    body: &str,
    retry_after: Option<&str>,
    endpoint: &Endpoint,
    secret: Option<&str>,
) -> Failure {
    let base = &endpoint.base;
    // The key goes before the body is cut: a cut key would leave a prefix.
    let body = &redact(body, secret);
    let said = server_message(body);
    let (code, message) = match status {
        401 | 403 => {
            let hint = match &endpoint.key {
                Some((_, source)) => format!(
                    "check that the key from {} matches the server's API_SERVER_KEY",
                    source.describe()
                ),
                None => format!(
                    "no key was found: set API_SERVER_KEY (environment or HERMES_HOME/.env) or {}",
                    KeySource::ConfigYaml.describe()
                ),
            };
            (
                exit::AUTH,
                format!(
                    "the Hermes API server at {base} refused the request (HTTP {status}{said}): {hint}"
                ),
            )
        }
        429 => {
            let wait = retry_after.map_or(String::new(), |s| format!(" after {} s", s.trim()));
            (
                exit::RATE_LIMITED,
                format!(
                    "the Hermes API server at {base} is rate limiting (HTTP 429{said}): retry later{wait}"
                ),
            )
        }
        _ => (
            exit::SERVER,
            format!(
                "the Hermes API server at {base} answered HTTP {status}: {}; check Hermes's gateway log",
                if body.trim().is_empty() {
                    "(empty body)".to_owned()
                } else {
                    snippet(body)
                }
            ),
        ),
    };
    Failure::new(code, redact(&message, secret))
}

/// `: <error.message>` from an OpenAI-style error body, if there is one.
fn server_message(body: &str) -> String {
    let value: Option<Value> = serde_json::from_str(body).ok();
    let message = value.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("error"))
            .or_else(|| v.get("detail"))
            .and_then(Value::as_str)
    });
    match message {
        Some(m) => format!(": {}", snippet(m)),
        None if body.trim().is_empty() => String::new(),
        None => format!(": {}", snippet(body)),
    }
}

/// The first 200 characters of `text`, on one line.
pub fn snippet(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

/// Replaces every occurrence of the key in `text`.
pub fn redact(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(s) if !s.is_empty() => text.replace(s, "<API_SERVER_KEY>"),
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_reply_text() {
        let ok = r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}]}"#;
        assert_eq!(reply_text(ok).unwrap(), "hi");
        assert!(reply_text("<html>").is_err());
        assert!(reply_text(r#"{"choices":[]}"#).is_err());
        assert!(reply_text(r#"{"choices":[{"message":{"content":null}}]}"#).is_err());
    }

    #[test]
    fn snippet_is_short_and_one_line() {
        let long = "x".repeat(500);
        assert_eq!(snippet(&long).chars().count(), 201);
        assert_eq!(snippet("a\n  b"), "a b");
        assert_eq!(snippet(&"é".repeat(300)).chars().count(), 201);
    }

    #[test]
    fn redacts_the_key() {
        assert_eq!(
            redact("k=abc, abc", Some("abc")),
            "k=<API_SERVER_KEY>, <API_SERVER_KEY>"
        );
        assert_eq!(redact("abc", None), "abc");
        assert_eq!(redact("abc", Some("")), "abc");
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            server_message(r#"{"error":{"message":"Invalid API key","type":"x"}}"#),
            ": Invalid API key"
        );
        assert_eq!(server_message(""), "");
        assert_eq!(server_message("nope"), ": nope");
    }
}
