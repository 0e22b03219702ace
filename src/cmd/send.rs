//! `send`: builds the perception event, resolves where to send it, posts
//! it, prints the reply and, with `--verify`, waits for the stores to show
//! the captured turn.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::SendConfig;
use crate::exit::{self, Failure};
use crate::home::HermesHome;
use crate::safe_io;
use crate::send::{Event, check_session_id, config, http, verify};

/// Runs `hermes-harvest send`; returns the exit code.
pub fn run(args: &SendConfig) -> Result<u8> {
    let event = build_event(args)?;
    let turn = event.render();
    let session = match &args.session {
        Some(s) => s.trim().to_owned(),
        None => format!("nexus-{}", event.world),
    };
    check_session_id(&session)?;
    if args.timeout_secs == 0 {
        return Err(Failure::new(exit::USAGE, "--timeout must be at least 1 second").into());
    }

    let home = args.home.resolve();
    if let Err(e) = &home
        && args.home.is_explicit()
        && !args.verify
        && !args.quiet
    {
        let e = format!("{e:#}");
        eprintln!(
            "hermes-harvest: warning: {}; using the default API server settings",
            crate::report::clean(&e)
        );
    }
    let endpoint = endpoint(args, home.as_ref().ok())?;
    if endpoint.key.is_some() && endpoint.cleartext_beyond_loopback() && !args.insecure_http {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "refusing to send the API key in the clear to {}: plain http:// beyond this machine; use an https:// URL (Tailscale Serve, a reverse proxy) or pass --insecure-http",
                endpoint.base
            ),
        )
        .into());
    }
    let roots = match &args.cacert {
        Some(path) => http::Roots::from_pem_file(path)?,
        None => http::Roots::System,
    };

    let verify_home = if args.verify {
        let home = home.context("--verify reads the Hermes stores")?;
        check_stores_here(&home)?;
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
        &roots,
        &session,
        &turn,
        Duration::from_secs(args.timeout_secs),
    )?;
    let out = if args.json { &reply.raw } else { &reply.text };
    write_stdout(out)?;

    match verify_home {
        Some(home) => verify_capture(args, &home, &reply, &session, &turn, baseline),
        None => Ok(exit::OK),
    }
}

/// `--verify` reads the stores of a home on this machine; when Hermes runs
/// elsewhere (its API server reached over the network) they are not here,
/// and that is said before anything is sent.
fn check_stores_here(home: &HermesHome) -> Result<()> {
    let has = |name: &str| home.dir.join(name).exists();
    if has("state.db") || has("sessions") {
        return Ok(());
    }
    Err(Failure::new(
        exit::USAGE,
        format!(
            "--verify reads the Hermes stores on this machine, and {} holds none (no state.db, no sessions/): when Hermes runs on another machine, run `send --verify` there, or point --hermes-home at its home (e.g. a mounted copy); nothing was sent",
            home.dir.display()
        ),
    )
    .into())
}

/// `--verify`: waits until the stores show the session holding this turn
/// followed by a reply.
fn verify_capture(
    args: &SendConfig,
    home: &HermesHome,
    reply: &http::Reply,
    session: &str,
    turn: &str,
    baseline: usize,
) -> Result<u8> {
    // The server echoes the session it used; trust it over our own id.
    let captured_id = reply
        .session_id
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(session)
        .to_owned();
    let (ok, last_error) = verify::wait(
        home,
        &captured_id,
        turn,
        baseline,
        Duration::from_secs(args.verify_timeout_secs),
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
            args.verify_timeout_secs,
            home.dir.display()
        ),
    )
    .into())
}

/// Where to send and with which key. A missing home is "no settings" for
/// sending (`--verify` needs it). A bad `--url` is a usage error (exit 2);
/// bad settings in the environment or the Hermes home exit 1.
fn endpoint(args: &SendConfig, home: Option<&HermesHome>) -> Result<config::Endpoint> {
    if let Some(url) = &args.url {
        config::normalize_url(url)
            .map_err(|e| Failure::new(exit::USAGE, format!("--url: {e:#}")))?;
    }
    config::resolve(
        args.url.as_deref(),
        &config::EnvVars::from_process(),
        home.map(|h| h.dir.as_path()),
    )
}

fn build_event(args: &SendConfig) -> Result<Event> {
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
                let text = safe_io::read_stream_text(std::io::stdin(), safe_io::MAX_EVENT_BYTES)
                    .context("reading the event from stdin")
                    .map_err(usage)?;
                (text, "stdin".to_owned())
            } else {
                let text = safe_io::read_text(Path::new(source), safe_io::MAX_EVENT_BYTES)
                    .with_context(|| format!("reading the event file {source}"))
                    .map_err(usage)?;
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

/// Writes the reply (plus a final newline) to stdout. A closed pipe is not
/// an error.
fn write_stdout(text: &str) -> Result<()> {
    let mut out = crate::sink::Stdout::new();
    out.line(text.strip_suffix('\n').unwrap_or(text).as_bytes())?;
    out.finish().map(|_| ())
}
