//! The shell's conventions, generated from the clap definitions so they never
//! drift from `--help`: completion scripts (clap_complete) and man pages
//! (clap_mangen). Both are data, so they go to stdout; a reader that closes
//! the pipe early (`| head`) ends the output quietly.

use std::path::Path;

use anyhow::{Result, bail};
use clap::CommandFactory;

use super::Cli;
use crate::exit;

/// `completions SHELL`: the script that shell loads to complete commands,
/// flags and their values.
pub fn completions(shell: clap_complete::Shell) -> Result<u8> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "hermes-harvest", &mut script);
    print(&script)
}

/// `man [--dir DIR]`: hermes-harvest.1 on stdout, or it and every command's
/// page (hermes-harvest-export.1, …) written into DIR, which must exist.
pub fn man(dir: Option<&Path>) -> Result<u8> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut page = Vec::new();
    main_page(&cmd, &mut page)?;
    let Some(dir) = dir else {
        return print(&page);
    };
    if !dir.is_dir() {
        bail!(exit::Failure::new(
            exit::USAGE,
            format!("--dir {}: not a directory", dir.display())
        ));
    }
    let written = |e| anyhow::Error::new(e).context(format!("writing into {}", dir.display()));
    for sub in cmd.get_subcommands() {
        clap_mangen::Man::new(sub.clone())
            .generate_to(dir)
            .map_err(written)?;
    }
    std::fs::write(dir.join("hermes-harvest.1"), &page).map_err(written)?;
    Ok(exit::OK)
}

/// The top page: clap_mangen's sections, with the exit codes as the usual
/// EXIT STATUS section (in place of the `--help` text they come from).
fn main_page(cmd: &clap::Command, w: &mut Vec<u8>) -> Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    man.render_subcommands_section(w)?;
    w.extend_from_slice(b".SH \"EXIT STATUS\"\n");
    for (code, meaning) in exit::TABLE {
        let text = meaning.replace('\\', "\\e").replace('-', "\\-");
        w.extend_from_slice(format!(".TP\n{code}\n{text}\n").as_bytes());
    }
    man.render_version_section(w)?;
    Ok(())
}

/// Writes generated text to stdout, line by line.
fn print(text: &[u8]) -> Result<u8> {
    let mut out = crate::sink::Stdout::new();
    for line in text
        .strip_suffix(b"\n")
        .unwrap_or(text)
        .split(|b| *b == b'\n')
    {
        out.line(line)?;
    }
    out.finish()?;
    Ok(exit::OK)
}
