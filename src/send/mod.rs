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
//! their exit codes: [`http`]. `--verify`: [`verify`].

pub mod config;
pub mod event;
pub mod http;
pub mod verify;

use std::io::Read;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cli::SendArgs;
use crate::exit::{self, Failure};
use crate::home::HermesHome;
pub use event::Event;

/// Runs `hermes-harvest send`; returns the exit code.
pub fn run(args: SendArgs) -> Result<u8> {
    let event = build_event(&args)?;
    let turn = event.render();
    let session = match &args.session {
        Some(s) => s.trim().to_owned(),
        None => format!("nexus-{}", event.world),
    };
    check_session_id(&session)?;
    if args.timeout == 0 {
        return Err(Failure::new(exit::USAGE, "--timeout must be at least 1 second").into());
    }

    // A missing home is "no settings" for sending; --verify needs it.
    let home = HermesHome::resolve(&args.home);
    if let Err(e) = &home
        && (args.home.hermes_home.is_some() || args.home.profile.is_some())
        && !args.verify
        && !args.quiet
    {
        let e = format!("{e:#}");
        eprintln!(
            "hermes-harvest: warning: {}; using the default API server settings",
            crate::report::clean(&e)
        );
    }
    if let Some(url) = &args.url {
        config::normalize_url(url)
            .map_err(|e| Failure::new(exit::USAGE, format!("--url: {e:#}")))?;
    }
    // Bad settings in the environment or the Hermes home: exit 1.
    let endpoint = config::resolve(
        args.url.as_deref(),
        &config::EnvVars::from_process(),
        home.as_ref().ok().map(|h| h.dir.as_path()),
    )?;

    let verify_home = if args.verify {
        let home = home.context("--verify reads the Hermes stores")?;
        Some(home)
    } else {
        None
    };
    // What the session already holds, so that an identical earlier event
    // cannot pass for this one.
    let baseline = match &verify_home {
        Some(h) => verify::look(h, &session, &turn)
            .ok()
            .flatten()
            .map_or(0, |seen| seen.answered),
        None => 0,
    };

    let reply = http::post(
        &endpoint,
        &session,
        &turn,
        Duration::from_secs(args.timeout),
    )?;
    let out = if args.json { &reply.raw } else { &reply.text };
    write_stdout(out)?;

    let Some(home) = verify_home else {
        return Ok(exit::OK);
    };
    // The server echoes the session it used; trust it over our own id.
    let captured_id = reply
        .session_id
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(&session)
        .to_owned();
    let (ok, last_error) = verify::wait(
        &home,
        &captured_id,
        &turn,
        baseline,
        Duration::from_secs(args.verify_timeout),
    );
    if ok {
        if !args.quiet {
            eprintln!("verified: session {}", crate::report::clean(&captured_id));
        }
        return Ok(exit::OK);
    }
    let why = last_error.map_or(String::new(), |e| format!(" (last read error: {e})"));
    Err(Failure::new(
        exit::NOT_CAPTURED,
        format!(
            "not captured: after {} s the stores under {} do not show session {captured_id} holding this turn followed by a reply{why}; check that --hermes-home is the home the gateway runs with, or raise --verify-timeout",
            args.verify_timeout,
            home.dir.display()
        ),
    )
    .into())
}

fn build_event(args: &SendArgs) -> Result<Event> {
    let usage = |e: anyhow::Error| Failure::new(exit::USAGE, format!("{e:#}"));
    match (&args.event, args.kind) {
        (Some(source), _) => {
            if args.actor.is_some() || args.at.is_some() || args.detail.is_some() {
                return Err(Failure::new(
                    exit::USAGE,
                    "give the event either as --event or as flags (--actor, --at, --detail), not both",
                )
                .into());
            }
            let (text, name) = if source == "-" {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading the event from stdin")?;
                (text, "stdin".to_owned())
            } else {
                let text = std::fs::read_to_string(source)
                    .with_context(|| format!("reading the event file {source}"))?;
                (text, source.clone())
            };
            Event::from_json(&text, &args.world)
                .with_context(|| format!("event from {name}"))
                .map_err(|e| usage(e).into())
        }
        (None, Some(kind)) => Event::from_flags(
            kind,
            args.actor.as_deref(),
            args.at.as_deref(),
            args.detail.as_deref(),
            &args.world,
        )
        .map_err(|e| usage(e).into()),
        (None, None) => Err(Failure::new(exit::USAGE, "give an event type or --event FILE").into()),
    }
}

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

/// Writes the reply (plus a final newline) to stdout. A closed pipe is not
/// an error.
fn write_stdout(text: &str) -> Result<()> {
    let mut out = crate::sink::Stdout::new();
    out.line(text.strip_suffix('\n').unwrap_or(text).as_bytes())?;
    out.finish().map(|_| ())
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
