//! Exit codes. [`TABLE`] describes every one in a line, for `--help` and the
//! man page; README.md explains each (tests/it/docs.rs checks it lists them all).

/// Everything worked.
pub const OK: u8 = 0;
/// A fatal error: nothing usable could be produced (bad store, I/O error...).
pub const ERROR: u8 = 1;
/// Bad command-line usage (clap's own code).
pub const USAGE: u8 = 2;
/// The run finished, but some inputs were unreadable and were skipped.
pub const PARTIAL: u8 = 3;
/// `validate` found problems in the file.
pub const INVALID: u8 = 4;
/// Another run holds the lock for this output or state file.
pub const LOCKED: u8 = 5;
/// `export --fail-on-empty`: the export holds no line.
pub const EMPTY: u8 = 6;
/// `export --fail-on-drop`: a selected turn or pair could not be written
/// (over the budget, or refused by the chat template).
pub const DROPPED: u8 = 7;
/// `send`: the API server could not be reached (connection refused, bad host).
pub const UNREACHABLE: u8 = 10;
/// `send`: the API server rejected the key (401/403).
pub const AUTH: u8 = 11;
/// `send`: the API server is rate limiting (429).
pub const RATE_LIMITED: u8 = 12;
/// `send`: the API server failed (5xx) or refused the request (other 4xx).
pub const SERVER: u8 = 13;
/// `send`: no reply within the timeout.
pub const TIMEOUT: u8 = 14;
/// `send`: the reply was not a chat completion.
pub const BAD_REPLY: u8 = 15;
/// `send --verify`: the turn did not show up in the stores in time.
pub const NOT_CAPTURED: u8 = 16;
/// `send`: TLS failed (certificate not trusted, handshake).
pub const TLS: u8 = 17;

/// Every exit code with its meaning in one line (`--help`, the man page).
pub const TABLE: [(u8, &str); 16] = [
    (OK, "success, including \"nothing new\""),
    (
        ERROR,
        "fatal error, or a refused output (the message says which)",
    ),
    (USAGE, "usage error: a bad flag, value, path or event"),
    (
        PARTIAL,
        "partial: some inputs were unreadable and skipped (each named)",
    ),
    (INVALID, "validate found problems"),
    (LOCKED, "another run holds the lock"),
    (EMPTY, "export --fail-on-empty: the output holds no line"),
    (
        DROPPED,
        "export --fail-on-drop: a selected turn or pair was dropped",
    ),
    (UNREACHABLE, "send: the API server is unreachable"),
    (AUTH, "send: the key was rejected (401/403)"),
    (RATE_LIMITED, "send: rate limited (429)"),
    (
        SERVER,
        "send: server error (5xx) or request refused (other 4xx)",
    ),
    (TIMEOUT, "send: no reply within --timeout"),
    (BAD_REPLY, "send: the reply was not a chat completion"),
    (
        NOT_CAPTURED,
        "send --verify: the turn did not appear in the stores in time",
    ),
    (TLS, "send: TLS failed (certificate not trusted, handshake)"),
];

/// An error that carries its own exit code. Anything else that reaches
/// `main` exits with [`ERROR`].
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The exit code for an error chain: the code of the first [`Failure`] in it,
/// else [`ERROR`].
pub fn code_of(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|e| e.downcast_ref::<Failure>())
        .map_or(ERROR, |f| f.code)
}
