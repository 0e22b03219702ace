use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = hermes_harvest::cli::Cli::parse();
    match hermes_harvest::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("hermes-harvest: {err:#}");
            ExitCode::from(hermes_harvest::exit::code_of(&err))
        }
    }
}
