//! `validate`: checks a JSONL file line by line and prints each problem as
//! `FILE:LINE: problem` on stdout; with `--max-tokens`, each line is also
//! rendered and counted as its trainer would.

use std::io::{BufRead, BufReader, Read};

use anyhow::{Context, Result};

use crate::config::ValidateConfig;
use crate::exit;
use crate::validate::{LineChecker, Schemas};

pub fn run(args: &ValidateConfig) -> Result<u8> {
    let schemas = Schemas::load()?;
    let reader: Box<dyn Read> = if args.file == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(&args.file).with_context(|| format!("opening {}", args.file))?)
    };
    let mut checker = LineChecker::new(&schemas, args.shape);
    // With --max-tokens, each line is also rendered and counted as its
    // trainer would (exactly with --tokenizer, else the export's estimate).
    let mut budget = match args.max_tokens {
        Some(n) => Some((n, crate::tokens::Counter::new(args.tokenizer.as_deref())?)),
        None => None,
    };
    let (mut lines, mut bad) = (0usize, 0usize);
    let mut buf = Vec::new();
    let mut r = BufReader::new(reader);
    // A reader that goes away (`| head`) ends the listing, not the check.
    let mut out = crate::sink::Stdout::new();
    let file = crate::report::clean(&args.file).into_owned();
    loop {
        buf.clear();
        if r.read_until(b'\n', &mut buf)
            .with_context(|| format!("reading {}", args.file))?
            == 0
        {
            break;
        }
        lines += 1;
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut problems = checker.check(line);
        if let Some((max, counter)) = budget.as_mut()
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(line)
        {
            match counter.count_line(&v) {
                Ok(c) if c.total > *max => problems.push(format!(
                    "{} tokens as rendered, over the budget of {max}",
                    c.total
                )),
                Ok(_) => {}
                Err(e) => problems.push(format!("cannot count tokens: {e:#}")),
            }
        }
        if !problems.is_empty() {
            bad += 1;
            for p in problems {
                let p = crate::report::clean(&p);
                out.line(format!("{file}:{lines}: {p}").as_bytes())?;
            }
        }
    }
    out.finish()?;
    if !args.quiet {
        eprintln!(
            "hermes-harvest: {file}: {lines} lines, {bad} with problems{}",
            checker
                .shape()
                .map(|s| format!(" ({})", s.as_str()))
                .unwrap_or_default()
        );
    }
    Ok(if bad > 0 { exit::INVALID } else { exit::OK })
}
