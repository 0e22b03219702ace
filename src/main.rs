use std::process::ExitCode;

use clap::Parser;

// The export allocates and frees many short strings and template values per
// sample; mimalloc does that markedly faster than the system allocator. The
// guard bounds what one chat-template render may hold.
#[global_allocator]
static ALLOC: hermes_harvest::render_guard::Guarded<mimalloc::MiMalloc> =
    hermes_harvest::render_guard::Guarded(mimalloc::MiMalloc);

fn main() -> ExitCode {
    let cli = hermes_harvest::cli::Cli::parse();
    let result = hermes_harvest::run(cli);
    if let Some(line) = hermes_harvest::stats_env::report() {
        eprintln!("hermes-harvest: {line}");
    }
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            // Server text and stored ids can hold terminal escapes.
            let text = format!("{err:#}");
            eprintln!("hermes-harvest: {}", hermes_harvest::report::clean(&text));
            ExitCode::from(hermes_harvest::exit::code_of(&err))
        }
    }
}
