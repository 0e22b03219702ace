//! The fuzz targets (`fuzz/fuzz_targets/`) as a short deterministic
//! property test: every committed seed in `fuzz/corpus/<target>/`, then a
//! fixed set of pseudo-random mutations of them (byte flips, truncations,
//! insertions of JSON punctuation, `\0` and `\n`, deletions, copies), go
//! through the same library entry points. Nothing may panic. The long
//! coverage-guided runs are `cargo fuzz run <target>` (see fuzz/README.md).

use std::sync::OnceLock;

use hermes_harvest::content;
use hermes_harvest::rebuild::rebuild;
use hermes_harvest::send::event::Event;
use hermes_harvest::source::session_files::{parse_snapshot, parse_transcript};
use hermes_harvest::validate::{LineChecker, Schemas};

use crate::common::repo;

/// Mutated inputs per target.
const MUTATIONS: usize = 300;

/// xorshift64: tiny, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn for_target(name: &str) -> Rng {
        // FNV-1a of the target name, so each target gets its own stream.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Bytes worth inserting into JSON and JSONL.
const INSERTS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"\\",
    b",",
    b":",
    b"\0",
    b"\n",
    b"\r\n",
    b"\\u0000",
    b"\xff",
    b"\xe2\x80",
    b"-0",
    b"1e999",
    b"null",
    b"\0json:",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] ^= 1 << rng.below(8);
            }
            1 => v.truncate(at),
            2 | 3 => {
                let ins = INSERTS[rng.below(INSERTS.len())];
                v.splice(at..at, ins.iter().copied());
            }
            4 => {
                let end = (at + 1 + rng.below(64)).min(v.len());
                v.drain(at..end.max(at));
            }
            _ => {
                // Copy a short run from elsewhere in the input.
                let from = rng.below(v.len() + 1);
                let end = (from + 1 + rng.below(64)).min(v.len());
                let run = v[from..end.max(from)].to_vec();
                v.splice(at..at, run);
            }
        }
    }
    v
}

/// Prints the input that was being processed if the check panics.
struct Witness<'a> {
    target: &'a str,
    what: String,
    input: &'a [u8],
}

impl Drop for Witness<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "{} panicked on {} ({} bytes): {:?}",
                self.target,
                self.what,
                self.input.len(),
                String::from_utf8_lossy(&self.input[..self.input.len().min(2000)])
            );
        }
    }
}

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = repo().join("fuzz/corpus").join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

/// Runs `check` on every seed of `target`, then on `MUTATIONS` mutations of
/// them. Returns how many seeds `check` accepted (returned true for).
fn exercise(target: &str, check: impl Fn(&[u8]) -> bool) -> usize {
    let seeds = seeds(target);
    let mut accepted = 0;
    for (name, bytes) in &seeds {
        let _w = Witness {
            target,
            what: format!("seed {name}"),
            input: bytes,
        };
        accepted += usize::from(check(bytes));
    }
    let mut rng = Rng::for_target(target);
    for i in 0..MUTATIONS {
        let (name, seed) = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, seed);
        let _w = Witness {
            target,
            what: format!("mutation {i} of seed {name}"),
            input: &input,
        };
        check(&input);
    }
    accepted
}

#[test]
fn session_json() {
    let ok = exercise("session_json", |data| {
        match parse_snapshot(data, Some("fuzz")) {
            Ok(session) => {
                rebuild(&session);
                true
            }
            Err(_) => false,
        }
    });
    assert!(ok >= 8, "the whole snapshots among the seeds parse ({ok})");
}

#[test]
fn session_jsonl() {
    let ok = exercise("session_jsonl", |data| {
        match parse_transcript(data, "fuzz", &mut |_, _| Ok(())) {
            Ok(session) => {
                let kept = rebuild(&session).messages.len();
                kept > 0
            }
            Err(_) => false,
        }
    });
    assert!(ok >= 4, "the transcripts among the seeds give turns ({ok})");
}

#[test]
fn content() {
    let ok = exercise("content", |data| {
        let Ok(s) = std::str::from_utf8(data) else {
            return false;
        };
        // Text without the structured-content prefix is kept as it is.
        if !s.starts_with("\0json:") {
            assert_eq!(content::decode(s), s);
        }
        // Prefixed text that is no JSON comes back without the prefix;
        // prefixed JSON reads as the same value's text.
        let prefixed = content::decode(&format!("\0json:{s}"));
        let parsed = serde_json::from_str::<serde_json::Value>(s);
        match &parsed {
            Ok(v) => assert_eq!(prefixed, content::value_text(v)),
            Err(_) => assert_eq!(prefixed, s),
        }
        // A stored tool-call list: an error exactly when it is neither
        // blank, null, nor a list whose every item names its function; a
        // list keeps one call per item, with its name.
        let calls = content::tool_calls_from_str(Some(s));
        match parsed {
            _ if s.trim().is_empty() => assert!(calls.unwrap().is_empty()),
            Err(_) => assert!(calls.is_err()),
            Ok(serde_json::Value::Null) => assert!(calls.unwrap().is_empty()),
            Ok(v) => match content::parse_tool_calls(&v) {
                Some(list) => {
                    let items = v.as_array().expect("a list of calls");
                    assert_eq!(list.len(), items.len());
                    for (call, item) in list.iter().zip(items) {
                        let func = item.get("function").unwrap_or(item);
                        assert_eq!(func["name"].as_str(), Some(call.name.as_str()));
                    }
                    assert_eq!(calls.unwrap().len(), list.len());
                }
                None => assert!(calls.is_err()),
            },
        }
        content::tool_calls_from_str(Some(s)).is_ok_and(|c| !c.is_empty())
    });
    assert!(ok >= 1, "the tool-call lists among the seeds parse ({ok})");
}

#[test]
fn event() {
    let ok = exercise("event", |data| {
        let Ok(s) = std::str::from_utf8(data) else {
            return false;
        };
        match Event::from_json(s, "world") {
            Ok(event) => {
                let turn = event.render();
                assert!(
                    !turn.contains('\n'),
                    "a rendered turn is one line: {turn:?}"
                );
                true
            }
            Err(_) => false,
        }
    });
    assert!(ok >= 5, "the valid events among the seeds parse ({ok})");
}

#[test]
fn validate_line() {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    let schemas = SCHEMAS.get_or_init(|| Schemas::load().expect("built-in schemas load"));
    let ok = exercise("validate_line", |data| {
        let mut checker = LineChecker::new(schemas, None);
        let lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
        let mut clean = true;
        for (i, line) in lines.iter().enumerate() {
            let problems = checker.check(line);
            // The empty piece after the final newline is not a line.
            if !(i + 1 == lines.len() && line.is_empty()) {
                clean &= problems.is_empty();
            }
        }
        clean
    });
    assert!(
        ok >= 5,
        "the exported files among the seeds validate ({ok})"
    );
}
