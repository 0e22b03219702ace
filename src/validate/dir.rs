//! `validate DIR/`: an export directory checked file by file and across
//! files.
//!
//! - Every split file (`train.jsonl`, `valid.jsonl`, and any other file the
//!   manifest lists) line by line, as `validate FILE` does, in one shape and
//!   one argument flavour for the whole directory; `manifest.json` against
//!   its schema; the dataset card (`README.md` or `DATASET_CARD.md`, the one
//!   that starts with the card's marker) against the card the manifest
//!   gives.
//! - Across files: no split unit in two splits (a line's unit is
//!   `meta.unit`, else `meta.session`); no answer in two splits (an answer
//!   is an exchange, a user turn with every turn after it up to the next
//!   user turn, normalised as the near-duplicate cap normalises it:
//!   letters lower-cased, whitespace collapsed, figures masked; context
//!   turns count, so a leak through context shows too); no line twice
//!   (`meta` aside; unless the export ran with `--keep-duplicates`); the
//!   manifest's figures (see [`FIGURES`]) equal the files'.
//! - Half-done: a split file whose last line has no newline, or a temporary
//!   file or journal a run left (`.hermes-harvest-*`), is a problem; so are
//!   files the manifest or, with `--state`, the state file describes
//!   otherwise (a run killed before its commit appends past what was
//!   committed).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io::BufReader;
use std::path::Path;

use anyhow::Result;
use serde_json::Value;

use super::committed::FileFacts;
use super::{LineChecker, MANIFEST_SCHEMA, PerLine, Problems, Schemas, Shape, scan};

/// The split files, in the order they are read (`train.jsonl` must be there).
pub const SPLIT_FILES: [&str; 2] = ["train.jsonl", "valid.jsonl"];
/// What a run that did not finish leaves beside its outputs (temporary
/// files, journals); the lock (`.hermes-harvest.lock`) is not one.
const UNFINISHED_PREFIX: &str = ".hermes-harvest-";
/// Largest manifest read.
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// What a manifest figure counts in the files.
#[derive(Debug, Clone, Copy)]
pub enum Tally {
    /// `{file: {"lines", "bytes"}}`: every split file, each as it is.
    Files,
    /// A number: the lines of all split files.
    Lines,
    /// `{channel: n}` (`meta.channel`); with a field, `{channel: {field: n}}`.
    /// A zero entry stands for no line.
    PerChannel(Option<&'static str>),
    /// `{signal: n}` (`meta.signal`); a zero entry stands for no line.
    PerSignal,
    /// `{file: n}`: the lines of each split file (a zero entry or none for
    /// a file that is not there).
    FileLines,
    /// `{"first", "last"}`: the earliest `meta.first` and the latest
    /// `meta.last` (or `meta.first`) of the lines.
    TimeRange,
}

/// Which manifests a figure describes the files in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every manifest.
    Always,
    /// A one-shot export's (`"cumulative": false`): in a cumulative
    /// directory these figures describe the last run only.
    OneShot,
}

/// A manifest figure that must equal what the files hold: where it is (a
/// JSON pointer), what it counts and when it applies.
#[derive(Debug, Clone, Copy)]
pub struct Figure {
    pub at: &'static str,
    pub tally: Tally,
    pub scope: Scope,
}

/// Every manifest figure checked against the files. A figure the manifest
/// gains is one more row here; a figure absent from a manifest (or `null`)
/// is not checked.
pub const FIGURES: &[Figure] = &[
    Figure {
        at: "/split/files",
        tally: Tally::Files,
        scope: Scope::Always,
    },
    Figure {
        at: "/counts/new_lines",
        tally: Tally::Lines,
        scope: Scope::OneShot,
    },
    Figure {
        at: "/counts/channels",
        tally: Tally::PerChannel(None),
        scope: Scope::OneShot,
    },
    Figure {
        at: "/counts/signals",
        tally: Tally::PerSignal,
        scope: Scope::OneShot,
    },
    Figure {
        at: "/tokens/channels",
        tally: Tally::PerChannel(Some("samples")),
        scope: Scope::OneShot,
    },
    Figure {
        at: "/time_range",
        tally: Tally::TimeRange,
        scope: Scope::OneShot,
    },
    // The whole cumulative dataset: always what the files hold. Its token
    // sums are checked against the state's figures of each line (`--state`,
    // see `committed`): the files alone cannot recount them without the
    // tokenizer, and the lines of a state upgraded from before version 4
    // have no token figures.
    Figure {
        at: "/dataset/lines",
        tally: Tally::FileLines,
        scope: Scope::Always,
    },
    Figure {
        at: "/dataset/samples",
        tally: Tally::PerChannel(None),
        scope: Scope::Always,
    },
    Figure {
        at: "/dataset/signals",
        tally: Tally::PerSignal,
        scope: Scope::Always,
    },
    Figure {
        at: "/dataset/time_range",
        tally: Tally::TimeRange,
        scope: Scope::Always,
    },
];

/// A directory to check.
pub struct DirCheck<'a> {
    pub dir: &'a Path,
    /// The expected shape; `None` takes the first line's.
    pub shape: Option<Shape>,
    /// A state file whose committed outputs the files must match.
    pub state: Option<&'a Path>,
}

/// What the directory held, for the summary line.
#[derive(Debug, Default)]
pub struct DirSummary {
    pub files: Vec<FileFacts>,
    pub shape: Option<Shape>,
}

impl fmt::Display for DirSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: u64 = self.files.iter().map(|x| x.lines).sum();
        write!(f, "{} split file(s), {lines} lines", self.files.len())?;
        if let Some(s) = self.shape {
            write!(f, " ({})", s.as_str())?;
        }
        Ok(())
    }
}

impl DirCheck<'_> {
    fn label(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Checks the directory, reporting every problem; `more` adds problems
    /// of its own per line (as [`scan`]'s).
    pub fn run(
        &self,
        schemas: &Schemas,
        problems: &mut Problems,
        more: &mut PerLine<'_>,
    ) -> Result<DirSummary> {
        let manifest = self.manifest(problems)?;
        let keep_duplicates = manifest.as_ref().is_some_and(|m| {
            m["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "--keep-duplicates"))
        });
        let summary = self.split_files(schemas, &manifest, !keep_duplicates, problems, more)?;
        self.leftovers(problems)?;
        if let Some(m) = &manifest {
            if let (Some(shape), Some(format)) = (summary.shape, m["format"].as_str())
                && shape.as_str() != format
            {
                let what = format!(
                    "format is {format}, but the files hold {} lines",
                    shape.as_str()
                );
                problems.add(&self.label("manifest.json"), None, &what)?;
            }
            for figure in FIGURES {
                self.figure(m, figure, &summary.files, problems)?;
            }
            self.card(m, problems)?;
        }
        if let Some(state) = self.state {
            let files = (&summary.files[..], manifest.as_ref());
            super::committed::check(self.dir, state, files, problems)?;
        }
        Ok(summary)
    }

    /// The manifest, when it is there and parses (checked against its schema).
    fn manifest(&self, problems: &mut Problems) -> Result<Option<Value>> {
        let label = self.label("manifest.json");
        let bytes = match crate::safe_io::read_optional(
            &self.dir.join("manifest.json"),
            MAX_MANIFEST_BYTES,
        ) {
            Ok(Some(b)) => b,
            Ok(None) => {
                let what = "missing: every export directory has one (a run killed before writing it leaves none; the next export writes it)";
                problems.add(&label, None, what)?;
                return Ok(None);
            }
            Err(e) => {
                problems.add(&label, None, &format!("cannot read: {e}"))?;
                return Ok(None);
            }
        };
        let m: Value = match serde_json::from_slice(&bytes) {
            Ok(m) => m,
            Err(e) => {
                problems.add(&label, None, &format!("not JSON: {e}"))?;
                return Ok(None);
            }
        };
        let schema: Value = serde_json::from_str(MANIFEST_SCHEMA)?;
        let validator = jsonschema::validator_for(&schema)
            .map_err(|e| anyhow::anyhow!("bad built-in schema: {e}"))?;
        for e in validator.iter_errors(&m).take(10) {
            let path = e.instance_path().to_string();
            problems.add(&label, None, &format!("schema: {path}: {e}"))?;
        }
        Ok(Some(m))
    }

    /// The split files: those that are there, and any the manifest lists.
    fn names(&self, manifest: &Option<Value>) -> Vec<String> {
        let mut names: Vec<String> = SPLIT_FILES.iter().map(|s| s.to_string()).collect();
        if let Some(files) = manifest
            .as_ref()
            .and_then(|m| m.pointer("/split/files"))
            .and_then(Value::as_object)
        {
            for name in files.keys() {
                let plain = !name.contains(['/', '\\']) && name != ".." && name != ".";
                if plain && !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
        names
    }

    fn split_files(
        &self,
        schemas: &Schemas,
        manifest: &Option<Value>,
        check_lines: bool,
        problems: &mut Problems,
        more: &mut PerLine<'_>,
    ) -> Result<DirSummary> {
        let mut summary = DirSummary {
            shape: self.shape,
            ..DirSummary::default()
        };
        let mut across = Across {
            check_lines,
            ..Across::default()
        };
        let mut flavour: Option<(bool, String)> = None;
        for name in self.names(manifest) {
            let path = self.dir.join(&name);
            let label = self.label(&name);
            let file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if name == SPLIT_FILES[0] {
                        problems.add(
                            &label,
                            None,
                            "missing: an export directory always has one",
                        )?;
                    }
                    continue;
                }
                Err(e) => {
                    problems.add(&label, None, &format!("cannot open: {e}"))?;
                    continue;
                }
            };
            let mut checker = LineChecker::new(schemas, summary.shape);
            let mut facts = FileFacts {
                name: name.clone(),
                ..FileFacts::default()
            };
            let index = summary.files.len();
            let found = scan(
                &mut BufReader::new(file),
                &label,
                &mut checker,
                problems,
                &mut |n, line, v| {
                    let mut out = more(n, line, v);
                    if let Some(v) = v {
                        out.extend(across.line(index, n, line, v, &mut facts));
                    }
                    out
                },
            )?;
            summary.shape = summary.shape.or(checker.shape());
            facts.lines = found.lines;
            facts.bytes = found.bytes;
            finished(&label, found, problems)?;
            one_flavour(&label, &name, checker.flavour(), &mut flavour, problems)?;
            across.names.push(name);
            summary.files.push(facts);
        }
        Ok(summary)
    }

    /// Temporary files and journals a run that did not finish left.
    fn leftovers(&self, problems: &mut Problems) -> Result<()> {
        let Ok(entries) = std::fs::read_dir(self.dir) else {
            return Ok(());
        };
        let mut left: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|n| n.starts_with(UNFINISHED_PREFIX))
            .collect();
        left.sort();
        for name in left {
            problems.add(
                &self.label(&name),
                None,
                "left by a run that did not finish (the next export with the same state finishes or removes it)",
            )?;
        }
        Ok(())
    }

    fn figure(
        &self,
        m: &Value,
        figure: &Figure,
        files: &[FileFacts],
        problems: &mut Problems,
    ) -> Result<()> {
        let cumulative = m["cumulative"] == Value::Bool(true);
        let Some(v) = m.pointer(figure.at).filter(|v| !v.is_null()) else {
            return Ok(());
        };
        if figure.scope == Scope::OneShot && cumulative {
            return Ok(());
        }
        let at = figure.at.trim_start_matches('/').replace('/', ".");
        let label = self.label("manifest.json");
        let untold = files.iter().any(|f| f.without_meta > 0);
        let mismatches = match figure.tally {
            Tally::Files => files_mismatches(v, files),
            Tally::Lines => {
                let lines: u64 = files.iter().map(|f| f.lines).sum();
                match v.as_u64() {
                    Some(n) if n != lines => {
                        vec![format!("says {n} lines, the split files hold {lines}")]
                    }
                    _ => Vec::new(),
                }
            }
            Tally::FileLines => file_lines_mismatches(v, files),
            Tally::PerChannel(_) | Tally::PerSignal | Tally::TimeRange if untold => Vec::new(),
            Tally::TimeRange => time_mismatches(v, files),
            Tally::PerChannel(field) => {
                map_mismatches(v, field, files.iter().map(|f| &f.per_channel))
            }
            Tally::PerSignal => map_mismatches(v, None, files.iter().map(|f| &f.per_signal)),
        };
        for what in mismatches {
            problems.add(&label, None, &format!("{at}: {what}"))?;
        }
        Ok(())
    }

    /// The card: the one that starts with the card's marker, as the
    /// manifest gives it.
    fn card(&self, m: &Value, problems: &mut Problems) -> Result<()> {
        let mut card = None;
        for name in crate::card::NAMES {
            let read = crate::safe_io::read_optional(&self.dir.join(name), MAX_MANIFEST_BYTES);
            if let Ok(Some(bytes)) = read
                && crate::card::is_ours(&bytes)
            {
                card = Some((name, bytes));
                break;
            }
        }
        let Some((name, bytes)) = card else {
            let what = format!(
                "no dataset card: neither {} starts with the card's marker",
                crate::card::NAMES.join(" nor ")
            );
            return problems.add(&self.label(crate::card::NAMES[0]), None, &what);
        };
        let text = String::from_utf8_lossy(&bytes);
        let expected = crate::card::render(m);
        if m["version"].as_str() != Some(env!("CARGO_PKG_VERSION")) {
            // Another version renders another card: its file table must
            // still agree with the manifest.
            return self.card_table(name, &text, m, problems);
        }
        if let Some((n, want)) = first_difference(&text, &expected) {
            let what = format!("differs from the card the manifest gives (expected {want:?})");
            problems.add(&self.label(name), Some(n), &what)?;
        }
        Ok(())
    }

    fn card_table(&self, name: &str, text: &str, m: &Value, problems: &mut Problems) -> Result<()> {
        let files = m.pointer("/split/files").and_then(Value::as_object);
        for (file, c) in files.into_iter().flatten() {
            let row = format!("| {file} | {} | {} |", c["lines"], c["bytes"]);
            if !text.lines().any(|l| l == row) {
                let what = format!("has no row `{row}` for the manifest's {file}");
                problems.add(&self.label(name), None, &what)?;
            }
        }
        Ok(())
    }
}

/// One argument flavour across the directory: `seen` is the first file's.
fn one_flavour(
    label: &str,
    name: &str,
    this: Option<(bool, usize)>,
    seen: &mut Option<(bool, String)>,
    problems: &mut Problems,
) -> Result<()> {
    let Some((strings, at)) = this else {
        return Ok(());
    };
    match seen {
        None => *seen = Some((strings, name.to_string())),
        Some((first, other)) if *first != strings => problems.add(
            label,
            Some(at as u64),
            &format!(
                "tool-call arguments are {} here but {} in {other} (one flavour per directory)",
                flavour_name(strings),
                flavour_name(*first)
            ),
        )?,
        _ => {}
    }
    Ok(())
}

fn flavour_name(strings: bool) -> &'static str {
    if strings { "strings" } else { "objects" }
}

/// A split file's end: not empty, no line left unfinished.
fn finished(label: &str, found: super::Scan, problems: &mut Problems) -> Result<()> {
    if found.bytes == 0 {
        problems.add(
            label,
            None,
            "0 bytes: `datasets` refuses an empty split file, and mlx-lm an empty valid.jsonl",
        )?;
    }
    if found.unterminated {
        problems.add(
            label,
            Some(found.lines),
            "the last line has no newline: a run was killed while writing it (the next export with the same state cuts it off)",
        )?;
    }
    Ok(())
}

/// The first line (1-based) where `text` differs from `expected`, with the
/// expected line.
fn first_difference(text: &str, expected: &str) -> Option<(u64, String)> {
    let (mut a, mut b) = (text.lines(), expected.lines());
    let mut n = 0;
    loop {
        n += 1;
        match (a.next(), b.next()) {
            (None, None) => return None,
            (x, y) if x == y => continue,
            (_, y) => return Some((n, y.unwrap_or("(end of the card)").to_string())),
        }
    }
}

/// Where `split.files` disagrees with the files.
fn files_mismatches(v: &Value, files: &[FileFacts]) -> Vec<String> {
    let mut out = Vec::new();
    let listed = v.as_object();
    for f in files {
        let entry = listed.and_then(|l| l.get(&f.name));
        let (lines, bytes) = match entry {
            Some(e) => (e["lines"].as_u64(), e["bytes"].as_u64()),
            None => {
                out.push(format!(
                    "no entry for {}, which holds {} lines",
                    f.name, f.lines
                ));
                continue;
            }
        };
        if lines != Some(f.lines) || bytes != Some(f.bytes) {
            out.push(format!(
                "{} holds {} lines, {} bytes; the manifest says {} lines, {} bytes (a run killed before it finished, or a change by hand)",
                f.name,
                f.lines,
                f.bytes,
                entry.map_or(Value::Null, |e| e["lines"].clone()),
                entry.map_or(Value::Null, |e| e["bytes"].clone()),
            ));
        }
    }
    // A split without lines has no file (a 0-byte JSONL file stops loaders).
    for (name, _) in listed
        .into_iter()
        .flat_map(|l| l.iter())
        .filter(|(_, e)| e["lines"].as_u64() != Some(0))
    {
        if !files.iter().any(|f| &f.name == name) {
            out.push(format!("lists {name}, which is not in the directory"));
        }
    }
    out
}

/// Where a `{file: n}` figure disagrees with the lines of the files.
fn file_lines_mismatches(v: &Value, files: &[FileFacts]) -> Vec<String> {
    let counted: BTreeMap<String, u64> = files.iter().map(|f| (f.name.clone(), f.lines)).collect();
    map_mismatches(v, None, [&counted].into_iter())
}

/// Where a `{"first", "last"}` figure disagrees with the lines' `meta`.
fn time_mismatches(v: &Value, files: &[FileFacts]) -> Vec<String> {
    let first = files.iter().filter_map(|f| f.first.as_deref()).min();
    let last = files.iter().filter_map(|f| f.last.as_deref()).max();
    [("first", first), ("last", last)]
        .into_iter()
        .filter(|(k, t)| v[*k].as_str() != *t)
        .map(|(k, t)| {
            format!(
                "{k}: says {}, the lines' meta gives {}",
                v[k],
                t.map_or("none".to_string(), |t| format!("{t:?}"))
            )
        })
        .collect()
}

/// Where a `{key: n}` (or `{key: {field: n}}`) figure disagrees with the
/// lines counted per key.
fn map_mismatches<'a>(
    v: &Value,
    field: Option<&str>,
    counted: impl Iterator<Item = &'a BTreeMap<String, u64>>,
) -> Vec<String> {
    let mut total: BTreeMap<&str, u64> = BTreeMap::new();
    for m in counted {
        for (k, n) in m {
            *total.entry(k).or_default() += n;
        }
    }
    let said = |k: &str| {
        let x = v.get(k);
        let x = match field {
            Some(f) => x.and_then(|x| x.get(f)),
            None => x,
        };
        x.and_then(Value::as_u64).unwrap_or(0)
    };
    let mut keys: Vec<&str> = total.keys().copied().collect();
    for k in v.as_object().into_iter().flat_map(|o| o.keys()) {
        if !keys.contains(&k.as_str()) {
            keys.push(k);
        }
    }
    keys.into_iter()
        .filter(|k| said(k) != total.get(k).copied().unwrap_or(0))
        .map(|k| {
            format!(
                "{k}{}: says {}, the files hold {} lines",
                field.map(|f| format!(".{f}")).unwrap_or_default(),
                said(k),
                total.get(k).copied().unwrap_or(0)
            )
        })
        .collect()
}

/// Where a key was first seen: (file index, line).
type Seen = (usize, u64);

/// Units, answers and lines across the split files.
#[derive(Default)]
struct Across {
    /// Names of the files read so far (by index).
    names: Vec<String>,
    units: HashMap<String, Seen>,
    answers: HashMap<u64, Seen>,
    lines: HashMap<u64, Seen>,
    /// (unit, file) pairs already reported.
    reported: HashSet<(String, usize)>,
    check_lines: bool,
}

impl Across {
    fn at(&self, (file, line): Seen, here: usize) -> String {
        let name = self.names.get(file).map_or("this file", String::as_str);
        if file == here {
            format!("line {line}")
        } else {
            format!("{name}:{line}")
        }
    }

    /// Records one line's facts; returns what it breaks.
    fn line(
        &mut self,
        file: usize,
        n: u64,
        bytes: &[u8],
        v: &Value,
        facts: &mut FileFacts,
    ) -> Vec<String> {
        let mut out = Vec::new();
        let meta = v.get("meta").filter(|m| m.is_object());
        match meta {
            Some(meta) => {
                let s = |k: &str| meta.get(k).and_then(Value::as_str);
                if let Some(c) = s("channel") {
                    *facts.per_channel.entry(c.to_string()).or_default() += 1;
                }
                if let Some(sig) = s("signal") {
                    *facts.per_signal.entry(sig.to_string()).or_default() += 1;
                }
                facts.saw(s("first"), s("last").or(s("first")));
                if let Some(unit) = s("unit").or(s("session")) {
                    out.extend(self.unit(file, n, unit));
                }
            }
            None => facts.without_meta += 1,
        }
        for key in answers(v) {
            match self.answers.get(&key) {
                Some(&seen) if seen.0 != file => out.push(format!(
                    "the same answer (a user turn and its reply, normalised) is in {}: an exchange in both splits",
                    self.at(seen, file)
                )),
                Some(_) => {}
                None => {
                    self.answers.insert(key, (file, n));
                }
            }
        }
        if self.check_lines {
            let print = line_print(v).unwrap_or_else(|| crate::hash::fingerprint(bytes));
            match self.lines.get(&print) {
                Some(&seen) => out.push(format!(
                    "the same line as {} (meta aside): a line twice",
                    self.at(seen, file)
                )),
                None => {
                    self.lines.insert(print, (file, n));
                }
            }
        }
        out
    }

    fn unit(&mut self, file: usize, n: u64, unit: &str) -> Option<String> {
        match self.units.get(unit) {
            Some(&seen) if seen.0 != file => {
                if !self.reported.insert((unit.to_string(), file)) {
                    return None;
                }
                Some(format!(
                    "split unit {unit:?} is also in {}: a conversation in both splits",
                    self.at(seen, file)
                ))
            }
            Some(_) => None,
            None => {
                self.units.insert(unit.to_string(), (file, n));
                None
            }
        }
    }
}

/// The fingerprint of a line without its `meta`.
fn line_print(v: &Value) -> Option<u64> {
    let obj = v.as_object()?;
    let mut text = String::new();
    for (k, x) in obj.iter().filter(|(k, _)| *k != "meta") {
        text.push_str(&serde_json::to_string(k).ok()?);
        text.push(':');
        text.push_str(&serde_json::to_string(x).ok()?);
        text.push(',');
    }
    Some(crate::hash::fingerprint(text.as_bytes()))
}

/// The normalised answers of a line: each exchange (a user turn and every
/// turn up to the next user turn) that holds an assistant turn, over the
/// SFT messages or the DPO prompt followed by the chosen side (flat DPO:
/// the prompt and the chosen text).
fn answers(v: &Value) -> Vec<u64> {
    use crate::curate::dedupe::normalise;
    let msgs: Vec<(&str, String)> = match Shape::of(v) {
        Some(Shape::DpoFlat) => ["prompt", "chosen"]
            .iter()
            .zip(["user", "assistant"])
            .map(|(k, role)| (role, v[*k].as_str().map(normalise).unwrap_or_default()))
            .collect(),
        Some(Shape::Sft) => turns(&v["messages"]),
        Some(Shape::Dpo) => {
            let mut t = turns(&v["prompt"]);
            t.extend(turns(&v["chosen"]));
            t
        }
        None => Vec::new(),
    };
    let mut out = Vec::new();
    let mut key = String::new();
    let mut answered = false;
    for (role, text) in msgs.iter().chain([("user", String::new())].iter()) {
        if *role == "user" {
            if answered {
                out.push(crate::hash::fingerprint(key.as_bytes()));
            }
            key.clear();
            answered = false;
        }
        if *role == "system" {
            continue;
        }
        answered |= *role == "assistant";
        key.push_str(role);
        key.push('\u{1}');
        key.push_str(text);
        key.push('\u{3}');
    }
    out
}

/// Each message's role and normalised text (content, then each tool call's
/// name and arguments).
fn turns(msgs: &Value) -> Vec<(&str, String)> {
    use crate::curate::dedupe::normalise;
    let text = |x: &Value| match x {
        Value::String(s) => normalise(s),
        Value::Null => String::new(),
        other => normalise(&other.to_string()),
    };
    msgs.as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let mut t = text(&m["content"]);
            for c in m["tool_calls"].as_array().into_iter().flatten() {
                t.push('\u{2}');
                t.push_str(c["function"]["name"].as_str().unwrap_or_default());
                t.push('\u{2}');
                t.push_str(&text(&c["function"]["arguments"]));
            }
            (m["role"].as_str().unwrap_or_default(), t)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_are_exchanges_normalised_and_context_counts() {
        let sft = json!({"messages": [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "Tick 17"},
            {"role": "assistant", "content": "All quiet at 1,2,3."},
            {"role": "user", "content": "and now?"},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "look", "arguments": {"x": 1}}}]},
            {"role": "tool", "tool_call_id": "a", "name": "look", "content": "ok"},
            {"role": "assistant", "content": "Done."}
        ]});
        let a = answers(&sft);
        assert_eq!(a.len(), 2);
        let other = json!({"messages": [
            {"role": "user", "content": "tick 18"},
            {"role": "assistant", "content": "all  quiet at 4,-5,6."}
        ]});
        assert_eq!(answers(&other), vec![a[0]], "figures and case aside");
        let dpo = json!({"prompt": [{"role": "user", "content": "Tick 9"}],
            "chosen": [{"role": "assistant", "content": "All quiet at 7,8,9."}],
            "rejected": [{"role": "assistant", "content": "No."}]});
        assert_eq!(answers(&dpo), vec![a[0]], "prompt and chosen");
        let flat = json!({"system": "", "prompt": "tick 1", "chosen": "all quiet at 0,0,0.", "rejected": "x"});
        assert_eq!(answers(&flat), vec![a[0]]);
        let no_reply = json!({"messages": [{"role": "user", "content": "Tick 17"}]});
        assert!(answers(&no_reply).is_empty());
    }

    #[test]
    fn lines_differ_by_content_not_meta() {
        let a = json!({"messages": [], "meta": {"session": "a"}});
        let b = json!({"messages": [], "meta": {"session": "b"}});
        let c = json!({"messages": [1]});
        assert_eq!(line_print(&a), line_print(&b));
        assert_ne!(line_print(&a), line_print(&c));
    }

    #[test]
    fn figures_per_key_ignore_zero_entries() {
        let mut t = BTreeMap::new();
        t.insert("nexus".to_string(), 3);
        let ok = json!({"nexus": 3, "tui": 0});
        assert!(map_mismatches(&ok, None, [&t].into_iter()).is_empty());
        let bad = json!({"nexus": {"samples": 2}, "tui": {"samples": 1}});
        let m = map_mismatches(&bad, Some("samples"), [&t].into_iter());
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(
            m[0].contains("nexus.samples: says 2, the files hold 3"),
            "{m:?}"
        );
    }

    #[test]
    fn the_first_difference_names_the_expected_line() {
        assert_eq!(first_difference("a\nb\n", "a\nb\n"), None);
        assert_eq!(first_difference("a\nc\n", "a\nb\n"), Some((2, "b".into())));
        assert_eq!(first_difference("a\n", "a\nb\n"), Some((2, "b".into())));
    }
}
