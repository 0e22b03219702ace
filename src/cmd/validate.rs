//! `validate`: checks a JSONL file line by line, or a split directory file
//! by file and across files (see `crate::validate::dir`), and prints each
//! problem as `FILE[:LINE]: problem` on stdout; with `--max-tokens`, each
//! line is also rendered and counted as its trainer would.

use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::config::ValidateConfig;
use crate::exit;
use crate::validate::{LineChecker, Problems, Schemas, scan};

pub fn run(args: &ValidateConfig) -> Result<u8> {
    let schemas = Schemas::load()?;
    let mut budget = Budget::new(args)?;
    let mut problems = Problems::default();
    if args.file != "-" && Path::new(&args.file).is_dir() {
        let dir = crate::validate::dir::DirCheck {
            dir: Path::new(&args.file),
            shape: args.shape,
            state: args.state.as_deref(),
        };
        let summary = dir.run(&schemas, &mut problems, &mut |_, _, v| budget.check(v))?;
        let found = problems.finish()?;
        if !args.quiet {
            eprintln!(
                "hermes-harvest: {}: {summary}, {found} problem(s)",
                crate::report::clean(&args.file)
            );
        }
        return Ok(if found > 0 { exit::INVALID } else { exit::OK });
    }
    if args.state.is_some() {
        let msg = "--state checks an export directory: give validate DIR/";
        return Err(exit::Failure::new(exit::USAGE, msg).into());
    }
    let reader: Box<dyn Read> = if args.file == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(&args.file).with_context(|| format!("opening {}", args.file))?)
    };
    let mut checker = LineChecker::new(&schemas, args.shape);
    let file = crate::report::clean(&args.file).into_owned();
    let found = scan(
        &mut BufReader::new(reader),
        &file,
        &mut checker,
        &mut problems,
        &mut |_, _, v| budget.check(v),
    )?;
    problems.finish()?;
    if !args.quiet {
        eprintln!(
            "hermes-harvest: {file}: {} lines, {} with problems{}",
            found.lines,
            found.bad,
            checker
                .shape()
                .map(|s| format!(" ({})", s.as_str()))
                .unwrap_or_default()
        );
    }
    Ok(if found.bad > 0 {
        exit::INVALID
    } else {
        exit::OK
    })
}

/// With `--max-tokens`, each line is also rendered and counted as its
/// trainer would (exactly with `--tokenizer`, else the export's estimate).
struct Budget(Option<(usize, crate::tokens::Counter)>);

impl Budget {
    fn new(args: &ValidateConfig) -> Result<Budget> {
        Ok(Budget(match args.max_tokens {
            Some(n) => Some((n, crate::tokens::Counter::new(args.tokenizer.as_deref())?)),
            None => None,
        }))
    }

    fn check(&mut self, v: Option<&Value>) -> Vec<String> {
        let (Some((max, counter)), Some(v)) = (self.0.as_mut(), v) else {
            return Vec::new();
        };
        match counter.count_line(v) {
            Ok(c) if c.total > *max => vec![format!(
                "{} tokens as rendered, over the budget of {max}",
                c.total
            )],
            Ok(_) => Vec::new(),
            Err(e) => vec![format!("cannot count tokens: {e:#}")],
        }
    }
}
