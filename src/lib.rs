//! hermes-harvest: Hermes Agent's recorded conversations → training JSONL.
//!
//! [`cli`] parses the command line and maps it to a clap-free
//! configuration ([`config`]); [`cmd`] runs each command with it. For
//! `export`, data flows `source` (one module per Hermes store) → [`model`]
//! → [`rebuild`] (the true conversation) → selection ([`select`]) →
//! [`format`] (sft, dpo; messages in [`message`], counted by [`tokens`]) →
//! [`output`] / [`sink`], with the [`manifest`] and [`card`] made from
//! figures handed to them. What earlier runs exported ([`state`],
//! [`coverage`], [`dataset`]) is plain data that selection reads; it opens
//! no store. `send` is separate.
//!
//! Imports follow that flow and never run back: readers know no output
//! format, formatters and curation get their own small options (never the
//! command's configuration), and the state never imports selection or a
//! store. `tests/it/arch.rs` draws the module graph and fails on a circle
//! or on an import against the flow.

pub mod card;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod content;
pub mod coverage;
pub mod curate;
pub mod dataset;
pub mod exit;
pub mod fixture;
pub mod format;
pub mod hash;
pub mod hermes_settings;
pub mod home;
pub mod lock;
pub mod manifest;
pub mod message;
pub mod model;
pub mod output;
pub mod paths;
pub mod pool;
pub mod rebuild;
pub mod recheck;
pub mod redact;
pub mod render_guard;
pub mod report;
pub mod safe_io;
pub mod sched;
pub mod select;
pub mod send;
pub mod shape;
pub mod sink;
pub mod skip;
pub mod source;
pub mod stall;
pub mod state;
pub mod stats_env;
pub mod time;
pub mod tokens;
pub mod validate;

use anyhow::Result;

use cli::{Cli, Command};

/// Runs a parsed command line and returns the exit code.
pub fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Export(args) => {
            let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
            cmd::export::run(args.config(now)?)
        }
        Command::Sources(args) => cmd::sources::run(&args.config()),
        Command::Send(args) => cmd::send::run(&args.config()),
        Command::Validate(args) => cmd::validate::run(&args.config()),
        Command::Forget(args) => cmd::forget::run(&args.config()),
        Command::Completions(args) => cli::shell::completions(args.shell),
        Command::Man(args) => cli::shell::man(args.dir.as_deref()),
    }
}
