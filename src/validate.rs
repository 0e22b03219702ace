//! `validate`: checks a JSONL file against the output schemas (embedded
//! from `schemas/`) and the rules a schema cannot express: role order, the
//! last turn, matching tool-call ids, no blank lines, one shape and one
//! argument flavour per file. Problems are printed one per line as
//! `FILE:LINE: problem`, and the exit code is INVALID (see `crate::cmd::validate`).
//! A split directory is checked by [`dir`].

mod committed;
pub mod dir;

use std::io::BufRead;

use anyhow::{Context, Result};
use jsonschema::{Registry, Validator};
use serde_json::Value;

pub use crate::shape::Shape;

pub const SFT_SCHEMA: &str = include_str!("../schemas/sft.schema.json");
pub const DPO_SCHEMA: &str = include_str!("../schemas/dpo.schema.json");
pub const DPO_FLAT_SCHEMA: &str = include_str!("../schemas/dpo-flat.schema.json");
pub const MANIFEST_SCHEMA: &str = include_str!("../schemas/manifest.schema.json");

/// Compiled validators for the three line shapes.
pub struct Schemas {
    sft: Validator,
    dpo: Validator,
    flat: Validator,
}

impl Schemas {
    pub fn load() -> Result<Schemas> {
        let sft: Value = serde_json::from_str(SFT_SCHEMA)?;
        let id = sft["$id"].as_str().unwrap_or_default().to_string();
        let registry = Registry::new().add(id, sft.clone())?.prepare()?;
        let build = |text: &str| -> Result<Validator> {
            let schema: Value = serde_json::from_str(text)?;
            jsonschema::options()
                .with_registry(&registry)
                .build(&schema)
                .map_err(|e| anyhow::anyhow!("bad built-in schema: {e}"))
        };
        Ok(Schemas {
            sft: build(SFT_SCHEMA)?,
            dpo: build(DPO_SCHEMA)?,
            flat: build(DPO_FLAT_SCHEMA)?,
        })
    }

    fn validator(&self, shape: Shape) -> &Validator {
        match shape {
            Shape::Sft => &self.sft,
            Shape::Dpo => &self.dpo,
            Shape::DpoFlat => &self.flat,
        }
    }

    /// Schema and semantic problems of one line of the given shape.
    pub fn check(&self, v: &Value, shape: Shape) -> Vec<String> {
        let mut problems: Vec<String> = self
            .validator(shape)
            .iter_errors(v)
            .take(5)
            .map(|e| {
                let path = e.instance_path().to_string();
                format!(
                    "schema: {}{e}",
                    if path.is_empty() {
                        String::new()
                    } else {
                        format!("{path}: ")
                    }
                )
            })
            .collect();
        if problems.is_empty() {
            problems.extend(semantic(v, shape));
        }
        problems
    }
}

fn role(m: &Value) -> &str {
    m.get("role").and_then(Value::as_str).unwrap_or_default()
}

fn text(m: &Value) -> &str {
    m.get("content").and_then(Value::as_str).unwrap_or_default()
}

fn calls(m: &Value) -> Vec<&str> {
    m.get("tool_calls")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("id").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

/// Checks a message sequence: system only first, tool results answering
/// earlier calls (by id, and by name where both give one), calls answered
/// before the next assistant turn (unless `open_calls_ok`, for DPO
/// completions that stop at a call).
fn sequence(msgs: &[Value], where_: &str, open_calls_ok: bool, out: &mut Vec<String>) {
    fn name_of(v: &Value) -> Option<&str> {
        v.get("name").and_then(Value::as_str)
    }
    // Open calls as (id, the called function's name).
    let mut open: Vec<(&str, Option<&str>)> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        if i > 0 && role(m) == "user" && role(&msgs[i - 1]) == "user" {
            out.push(format!(
                "{where_}[{i}]: two user turns in a row (roles must alternate)"
            ));
        }
        if i > 0 && role(m) == "assistant" && role(&msgs[i - 1]) == "system" {
            out.push(format!(
                "{where_}[{i}]: an assistant turn right after the system prompt"
            ));
        }
        match role(m) {
            "system" if i > 0 => {
                out.push(format!("{where_}[{i}]: a system message must come first"))
            }
            "user" | "assistant" if !open.is_empty() => {
                out.push(format!(
                    "{where_}[{i}]: tool call {} has no result before this {} turn",
                    open[0].0,
                    role(m)
                ));
                open.clear();
            }
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                match open.iter().position(|o| o.0 == id) {
                    Some(p) => {
                        let (_, called) = open.remove(p);
                        if let (Some(called), Some(name)) = (called, name_of(m))
                            && called != name
                        {
                            out.push(format!(
                                "{where_}[{i}]: tool result {id:?} is named {name:?} but answers a call of {called:?}"
                            ));
                        }
                    }
                    None => out.push(format!(
                        "{where_}[{i}]: tool result {id:?} answers no open tool call"
                    )),
                }
            }
            _ => {}
        }
        for c in m
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(id) = c.get("id").and_then(Value::as_str) else {
                continue;
            };
            if seen.contains(&id) {
                out.push(format!("{where_}[{i}]: tool call id {id:?} is used twice"));
            }
            seen.push(id);
            open.push((id, c.get("function").and_then(name_of)));
        }
    }
    if !open.is_empty() && !open_calls_ok {
        out.push(format!("{where_}: tool call {} has no result", open[0].0));
    }
}

fn semantic(v: &Value, shape: Shape) -> Vec<String> {
    let mut out = Vec::new();
    let list = |k: &str| {
        v.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    match shape {
        Shape::Sft => {
            let msgs = list("messages");
            sequence(&msgs, "messages", false, &mut out);
            if let Some(first) = msgs.iter().find(|m| role(m) != "system")
                && role(first) != "user"
            {
                out.push(
                    "messages: the first turn after the system prompt must be a user turn".into(),
                );
            }
            match msgs.last() {
                Some(last)
                    if role(last) == "assistant"
                        && calls(last).is_empty()
                        && !text(last).trim().is_empty() => {}
                _ => out
                    .push("messages: the last message must be an assistant reply with text".into()),
            }
        }
        Shape::Dpo => {
            let prompt = list("prompt");
            sequence(&prompt, "prompt", false, &mut out);
            if prompt.last().is_none_or(|m| role(m) != "user") {
                out.push("prompt: must end with a user turn".into());
            }
            for side in ["chosen", "rejected"] {
                let msgs = list(side);
                if msgs.first().is_some_and(|m| role(m) != "assistant") {
                    out.push(format!("{side}: must start with an assistant turn"));
                }
                if msgs.iter().any(|m| matches!(role(m), "system" | "user")) {
                    out.push(format!("{side}: may hold only assistant and tool turns"));
                }
                sequence(&msgs, side, true, &mut out);
            }
            if v.get("chosen") == v.get("rejected") {
                out.push("chosen and rejected are the same".into());
            }
        }
        Shape::DpoFlat => {
            let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().trim();
            if s("chosen") == s("rejected") {
                out.push("chosen and rejected are the same".into());
            }
        }
    }
    out
}

/// Tool-call argument flavour of a line: objects or strings, if it has calls.
fn flavour(v: &Value) -> Option<bool> {
    let mut found = None;
    let mut visit = |msgs: Option<&Value>| {
        for m in msgs.and_then(Value::as_array).into_iter().flatten() {
            for c in m
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                found = found.or(Some(c["function"]["arguments"].is_string()));
            }
        }
    };
    for k in ["messages", "prompt", "chosen", "rejected"] {
        visit(v.get(k));
    }
    found
}

/// Tool-call arguments nested deeper than the export writes them.
fn too_deep_arguments(v: &Value) -> Option<String> {
    let limit = crate::content::MAX_ARGUMENTS_DEPTH;
    let deepest = ["messages", "prompt", "chosen", "rejected"]
        .iter()
        .filter_map(|k| v.get(*k).and_then(Value::as_array))
        .flatten()
        .filter_map(|m| m.get("tool_calls").and_then(Value::as_array))
        .flatten()
        .map(|c| match &c["function"]["arguments"] {
            Value::String(s) => {
                serde_json::from_str::<Value>(s).map_or(0, |a| crate::content::depth(&a))
            }
            other => crate::content::depth(other),
        })
        .max()?;
    (deepest > limit).then(|| {
        format!("tool-call arguments nest {deepest} levels deep, more than the {limit} the export writes")
    })
}

/// Checks a file line by line, remembering the file's shape and argument
/// flavour from the first line that shows them.
pub struct LineChecker<'a> {
    schemas: &'a Schemas,
    shape: Option<Shape>,
    /// (arguments are strings, line where that was first seen)
    flavour: Option<(bool, usize)>,
    line: usize,
}

impl<'a> LineChecker<'a> {
    pub fn new(schemas: &'a Schemas, shape: Option<Shape>) -> LineChecker<'a> {
        LineChecker {
            schemas,
            shape,
            flavour: None,
            line: 0,
        }
    }

    pub fn shape(&self) -> Option<Shape> {
        self.shape
    }

    /// Whether the file's tool-call arguments are strings (and the line
    /// that showed it first), once a line has shown it.
    pub fn flavour(&self) -> Option<(bool, usize)> {
        self.flavour
    }

    /// The problems of the next line (without its line ending).
    pub fn check(&mut self, line: &[u8]) -> Vec<String> {
        self.check_parsed(line).0
    }

    /// [`LineChecker::check`], also giving the line's JSON when it parses
    /// as an object of a known shape.
    pub fn check_parsed(&mut self, line: &[u8]) -> (Vec<String>, Option<Value>) {
        self.line += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            return (vec!["blank line".to_string()], None);
        }
        let v: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => return (vec![format!("not JSON: {e}")], None),
        };
        let Some(this) = Shape::of(&v) else {
            let what = "neither an SFT (messages) nor a DPO (prompt/chosen/rejected) line";
            return (vec![what.to_string()], None);
        };
        let expected = *self.shape.get_or_insert(this);
        let mut problems = if this == expected {
            self.schemas.check(&v, expected)
        } else {
            vec![format!(
                "a {} line in a {} file (one shape per file)",
                this.as_str(),
                expected.as_str()
            )]
        };
        problems.extend(too_deep_arguments(&v));
        if let Some(f) = flavour(&v) {
            match self.flavour {
                None => self.flavour = Some((f, self.line)),
                Some((first, at)) if first != f => problems.push(format!(
                    "tool-call arguments are {} here but {} on line {at} (one flavour per file)",
                    if f { "strings" } else { "objects" },
                    if first { "strings" } else { "objects" }
                )),
                _ => {}
            }
        }
        (problems, Some(v))
    }
}

/// Where problems go: one line each, `FILE[:LINE]: problem`, on stdout (a
/// reader that goes away, as `| head` does, ends the listing, not the check).
#[derive(Default)]
pub struct Problems {
    out: crate::sink::Stdout,
    /// Problems reported so far.
    pub found: usize,
}

impl Problems {
    pub fn add(&mut self, file: &str, line: Option<u64>, problem: &str) -> Result<()> {
        self.found += 1;
        let file = crate::report::clean(file);
        let problem = crate::report::clean(problem);
        let text = match line {
            Some(n) => format!("{file}:{n}: {problem}"),
            None => format!("{file}: {problem}"),
        };
        self.out.line(text.as_bytes())
    }

    pub fn finish(mut self) -> Result<usize> {
        self.out.finish()?;
        Ok(self.found)
    }
}

/// Problems of one line of its own that a caller adds to [`scan`]'s: it
/// sees the line's number, its bytes and its JSON (when it parsed).
pub type PerLine<'a> = dyn FnMut(u64, &[u8], Option<&Value>) -> Vec<String> + 'a;

/// What [`scan`] found in one stream.
#[derive(Debug, Default, Clone, Copy)]
pub struct Scan {
    pub lines: u64,
    pub bytes: u64,
    /// Lines with at least one problem.
    pub bad: u64,
    /// The stream ends inside a line (no newline after its last bytes).
    pub unterminated: bool,
}

/// Checks every line of `r` with `checker`, reporting each problem under
/// `file`. `more` sees each line (number, bytes, JSON when it parsed) and
/// returns problems of its own (a token budget, facts a directory check
/// collects).
pub fn scan(
    r: &mut dyn BufRead,
    file: &str,
    checker: &mut LineChecker<'_>,
    problems: &mut Problems,
    more: &mut PerLine<'_>,
) -> Result<Scan> {
    let mut scan = Scan::default();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = r
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("reading {file}"))?;
        if n == 0 {
            break;
        }
        scan.lines += 1;
        scan.bytes += n as u64;
        scan.unterminated = !buf.ends_with(b"\n");
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let (mut found, v) = checker.check_parsed(line);
        found.extend(more(scan.lines, line, v.as_ref()));
        if !found.is_empty() {
            scan.bad += 1;
            for p in found {
                problems.add(file, Some(scan.lines), &p)?;
            }
        }
    }
    Ok(scan)
}
