//! hermes-harvest: Hermes Agent's recorded conversations → training JSONL.
//!
//! Data flows `source` (one module per Hermes store) → [`model`] →
//! [`rebuild`] (the true conversation) → selection ([`config`]) →
//! [`format`] (sft, dpo) → [`sink`]. `send` is separate.

pub mod card;
pub mod cli;
pub mod config;
pub mod content;
pub mod coverage;
pub mod curate;
pub mod exit;
pub mod export;
pub mod fixture;
pub mod forget;
pub mod format;
pub mod home;
pub mod model;
pub mod output;
pub mod paths;
pub mod rebuild;
pub mod redact;
pub mod report;
pub mod safe_io;
pub mod sampled_hash;
pub mod send;
pub mod sink;
pub mod source;
pub mod sources_cmd;
pub mod stall;
pub mod state;
pub mod tokens;
pub mod validate;

use anyhow::Result;

use cli::{Cli, Command};

/// Runs a parsed command line and returns the exit code.
pub fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Export(args) => export::run(&args),
        Command::Sources(args) => sources_cmd::run(&args),
        Command::Send(args) => send::run(*args),
        Command::Validate(args) => validate::run(&args),
        Command::Forget(args) => forget::run(&args),
    }
}
