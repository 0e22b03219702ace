//! `send`: inject a Nexus perception event into Hermes through its
//! existing `/v1/chat/completions` endpoint.
//!
//! The event (from flags, or a JSON file / stdin following
//! `schemas/perception-event.schema.json`) is rendered as one user turn (see
//! [`Event::render`] for the exact text of every type) and POSTed to the
//! API server's `/v1/chat/completions`:
//!
//! ```text
//! POST <url>/v1/chat/completions
//! Authorization: Bearer <key>            (when a key is configured)
//! X-Hermes-Session-Id: <--session, else nexus-<world>>
//! {"model":"hermes-agent","messages":[{"role":"user","content":"<turn>"}],"stream":false}
//! ```
//!
//! Only the new turn is sent: Hermes loads the session's history from its
//! own store, so every event of a world lands in one persistent session.
//! The assistant's reply goes to stdout (`--json`: the response body as
//! received). Where the URL and key come from: [`config`]. Failures and
//! their exit codes: [`http`]. `--verify`: [`verify`]. The command itself: `crate::cmd::send`.

pub mod config;
pub mod event;
pub mod http;
pub mod verify;

use anyhow::Result;

use crate::exit::{self, Failure};
pub use event::{Event, EventKind};

/// The rules Hermes applies to `X-Hermes-Session-Id` (it answers 400
/// otherwise), plus printable ASCII so it is a valid header value.
pub fn check_session_id(id: &str) -> Result<()> {
    let bad = |why: &str| -> Result<()> {
        Err(Failure::new(exit::USAGE, format!("session id {id:?} {why}")).into())
    };
    if id.is_empty() {
        return bad("is empty");
    }
    if id.chars().count() > 256 {
        return bad("is longer than 256 characters");
    }
    if !id.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
        return bad("must be printable ASCII");
    }
    let b = id.as_bytes();
    if id.contains("..")
        || id.contains(['/', '\\'])
        || (b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':')
    {
        return bad("must not look like a path (no '/', '\\', '..' or drive prefix)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids() {
        for ok in ["nexus-world", "nexus-world-0001", "a b", "nexus:w"] {
            assert!(check_session_id(ok).is_ok(), "{ok}");
        }
        let long = "x".repeat(257);
        for bad in [
            "",
            "a/b",
            "a\\b",
            "..",
            "c:x",
            "x:y",
            "a\nb",
            "é",
            long.as_str(),
        ] {
            assert!(check_session_id(bad).is_err(), "{bad}");
        }
    }
}
