//! Writes a large, realistic Hermes 0.19 `state.db` for benchmarks, by replicating the
//! sessions captured in `fixtures/hermes-0.19.0/home` with varied text:
//!
//!     cargo run --release --example synth-store -- --out target/bench/home/state.db
//!     cargo run --release --example synth-store -- --out /tmp/small.db --sessions 20000
//!     cargo run --release --example synth-store -- --out target/bench/home/state.db --append-day
//!     cargo run --release --example synth-store -- --varied --out target/bench/varied/home/state.db
//!     cargo run --release --example synth-store -- --measure --out target/bench/home/state.db
//!
//! The schema (tables, FTS5 tables, indexes, triggers) is copied from the captured store;
//! the FTS triggers stay in place, so every message is indexed the way Hermes does it.
//! Every captured session is a template (a compaction lineage is one template of two
//! sessions); a template instance gets new ids of the same shape (`nexus-…`,
//! `api-<16 hex>`, UUIDs, `YYYYMMDD_HHMMSS_<hex>`), fresh tool-call ids, its own
//! Telegram user, start times spread over the year before `--end`, and words of its
//! texts replaced by a pseudo-random substitution seeded by the instance number (one
//! mapping per instance, so regenerated, rewound and compaction-copied texts stay equal).
//! Short Nexus sessions (the first one or two turns of the captured Nexus session) make
//! up most of the store, as in a year of Nexus ticks. A few instances run concurrently,
//! so their message rows interleave as in a live store.
//!
//! The default size is about 220,000 sessions and 900,000 messages (about 2.6 GB).
//! `--append-day` adds one more day (`--day-sessions`, default 600) to an existing
//! store, on the day after its latest session, in one transaction, with Hermes's own
//! indexes and triggers doing the work. The output is deterministic for a given
//! `--seed`, size and `--end`.
//!
//! `--varied` makes every instance's text differ as real conversations do (a lexicon of
//! about 40,000 words, generated prose of varying length inserted at a varying offset,
//! varied tool arguments and results: see `synth-store/varied.rs`); use it with
//! `--append-day` too on such a store. At the end the generator prints how varied the
//! store is (distinct message texts, tool results and tool calls, distinct 8-word
//! shingles); `--measure` prints the same for an existing store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};

#[path = "synth-store/varied.rs"]
mod varied;
use varied::{Lexicon, Variety};

const USAGE: &str =
    "usage: synth-store [--out STATE_DB] [--sessions N] [--seed S] [--end UNIX_SECONDS]
                   [--fixture FIXTURE_HOME] [--force] [--varied]
       synth-store --append-day [--out STATE_DB] [--day-sessions N] [--seed S] [--varied]
       synth-store --measure [--out STATE_DB]

  --out PATH          state.db to write (default target/bench/home/state.db)
  --sessions N        number of sessions (default 220000)
  --seed S            seed of the pseudo-random choices (default 1)
  --end T             the year of sessions ends at this Unix time (default 2026-11-25T00:00:00Z)
  --fixture DIR       captured Hermes 0.19 home (default fixtures/hermes-0.19.0/home)
  --force             replace an existing PATH
  --append-day        append one more day of sessions to the existing PATH
  --day-sessions N    sessions in that day (default 600)
  --varied            text that varies per instance as real conversations do
  --measure           print how varied the existing PATH is (distinct texts, shingles)";

/// 2026-11-25T00:00:00Z.
const DEFAULT_END: i64 = 1_795_564_800;
const YEAR: f64 = 365.0 * 86_400.0;
/// Template instances in flight at once (their message rows interleave).
const CONCURRENT: usize = 3;

struct Args {
    out: PathBuf,
    sessions: u64,
    seed: u64,
    end: i64,
    fixture: PathBuf,
    force: bool,
    append_day: bool,
    day_sessions: u64,
    varied: bool,
    measure: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        out: PathBuf::from("target/bench/home/state.db"),
        sessions: 220_000,
        seed: 1,
        end: DEFAULT_END,
        fixture: Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hermes-0.19.0/home"),
        force: false,
        append_day: false,
        day_sessions: 600,
        varied: false,
        measure: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--out" => args.out = PathBuf::from(value()?),
            "--sessions" => args.sessions = value()?.parse().context("--sessions")?,
            "--seed" => args.seed = value()?.parse().context("--seed")?,
            "--end" => args.end = value()?.parse().context("--end")?,
            "--fixture" => args.fixture = PathBuf::from(value()?),
            "--day-sessions" => args.day_sessions = value()?.parse().context("--day-sessions")?,
            "--force" => args.force = true,
            "--append-day" => args.append_day = true,
            "--varied" => args.varied = true,
            "--measure" => args.measure = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => bail!("unknown argument {flag:?}\n{USAGE}"),
        }
    }
    Ok(args)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("synth-store: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args = parse_args()?;
    let started = Instant::now();
    if args.measure {
        return measure(&args.out);
    }
    let tmp = tempfile::tempdir()?;
    hermes_harvest::fixture::materialize(&args.fixture, tmp.path())
        .with_context(|| format!("building the fixture home {}", args.fixture.display()))?;
    let fixture_db = Connection::open_with_flags(
        tmp.path().join("state.db"),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let mut fx = Fixture::load(&fixture_db)?;
    if args.varied {
        let lex = Lexicon::new(fx.texts().into_iter());
        eprintln!("synth-store: --varied, a lexicon of {} words", lex.size());
        fx.lexicon = Some(lex);
    }
    if args.append_day {
        append_day(&args, &fx, started)
    } else {
        generate(&args, &fixture_db, &fx, started)
    }
}

// ---------------------------------------------------------------------------------------
// Pseudo-random numbers and bijective mixers (for ids that must never collide).

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(mix64(seed ^ 0x5DEE_CE66_D1CE_4E5B))
    }
    /// splitmix64
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The splitmix64 finaliser: a bijection on u64.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A bijection on the integers below 2^bits (odd multiplications and xor-shifts).
fn perm_bits(x: u64, bits: u32) -> u64 {
    let mask = (1u64 << bits) - 1;
    let mut x = x & mask;
    x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15 | 1) & mask;
    x ^= x >> (bits / 2 + 1);
    x = x.wrapping_mul(0xD6E8_FEB8_6659_FD93 | 1) & mask;
    x ^= x >> (bits / 2 - 1);
    x
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

// ---------------------------------------------------------------------------------------
// Text variation.

const VOCAB: &[&str] = &[
    "amber",
    "anchor",
    "arch",
    "archive",
    "aurora",
    "banner",
    "basalt",
    "beacon",
    "bell",
    "birch",
    "blade",
    "bloom",
    "bridge",
    "bronze",
    "cairn",
    "canal",
    "candle",
    "canyon",
    "cedar",
    "chamber",
    "chapel",
    "chart",
    "cinder",
    "citadel",
    "clock",
    "cobalt",
    "comet",
    "compass",
    "copper",
    "coral",
    "courtyard",
    "crater",
    "crest",
    "crystal",
    "current",
    "dawn",
    "delta",
    "desert",
    "dome",
    "drift",
    "dune",
    "eagle",
    "echo",
    "ember",
    "engine",
    "estuary",
    "falcon",
    "fern",
    "ferry",
    "field",
    "flare",
    "forest",
    "forge",
    "fountain",
    "frost",
    "galley",
    "garden",
    "garnet",
    "glacier",
    "glade",
    "granite",
    "grove",
    "harbor",
    "harvest",
    "haven",
    "hearth",
    "heron",
    "hollow",
    "horizon",
    "island",
    "ivory",
    "jasper",
    "juniper",
    "kestrel",
    "kiln",
    "lagoon",
    "lantern",
    "larch",
    "lattice",
    "ledger",
    "lichen",
    "lighthouse",
    "linden",
    "loom",
    "lumen",
    "maple",
    "marble",
    "marsh",
    "meadow",
    "mesa",
    "meteor",
    "mill",
    "mirror",
    "monolith",
    "moor",
    "mosaic",
    "nebula",
    "needle",
    "nettle",
    "oasis",
    "obsidian",
    "ocean",
    "onyx",
    "orbit",
    "orchard",
    "outpost",
    "palisade",
    "pavilion",
    "pearl",
    "pebble",
    "pier",
    "pillar",
    "pine",
    "plateau",
    "prairie",
    "prism",
    "quarry",
    "quartz",
    "quill",
    "rampart",
    "raven",
    "reef",
    "relay",
    "ridge",
    "river",
    "rowan",
    "ruby",
    "saffron",
    "sandstone",
    "sapphire",
    "scroll",
    "sentinel",
    "shard",
    "shelter",
    "signal",
    "silver",
    "slate",
    "spire",
    "spring",
    "spruce",
    "stable",
    "star",
    "steppe",
    "stone",
    "summit",
    "swallow",
    "tablet",
    "thicket",
    "thistle",
    "thunder",
    "timber",
    "torch",
    "tower",
    "trail",
    "tundra",
    "valley",
    "vault",
    "velvet",
    "vessel",
    "village",
    "violet",
    "wagon",
    "warden",
    "waterfall",
    "wharf",
    "willow",
    "window",
    "winter",
    "wren",
    "yarrow",
    "zenith",
    "zephyr",
    "alder",
    "basin",
    "bramble",
    "brook",
    "causeway",
    "cliff",
    "cloister",
    "dell",
    "fjord",
    "gorge",
    "heath",
    "inlet",
    "knoll",
    "mound",
    "rill",
    "bright",
    "quiet",
    "ancient",
    "distant",
    "gentle",
    "hidden",
    "golden",
    "silent",
    "northern",
    "eastern",
    "western",
    "southern",
    "hollowed",
    "patient",
    "restless",
    "steady",
    "careful",
    "curious",
    "luminous",
    "weathered",
    "vivid",
    "wandering",
    "watchful",
    "humble",
    "gather",
    "follow",
    "measure",
    "listen",
    "wander",
    "remember",
    "kindle",
    "mend",
    "record",
    "observe",
    "explain",
    "describe",
    "prepare",
    "repair",
    "visit",
    "welcome",
];

/// Words that carry structure for Hermes or for the exporter, never replaced.
const KEEP: &[&str] = &[
    "Reply",
    "Reasoning",
    "perception",
    "step",
    "calling",
    "todo",
    "noted",
    "done",
    "after",
    "tool",
    "call",
    "Part",
    "note",
    "Summary",
    "summarised",
    "characters",
    "Historical",
];

/// Replaces about a third of the words (of 4+ ASCII letters, not all-caps, not part of an
/// identifier with `_`, not right after `[`) with vocabulary words. The choice depends only
/// on (seed, word), so equal texts stay equal within one template instance.
fn vary_into(text: &str, seed: u64, out: &mut String) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        if !b[i].is_ascii_alphabetic() {
            while i < b.len() && !b[i].is_ascii_alphabetic() {
                i += 1;
            }
            out.push_str(&text[start..i]);
            continue;
        }
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let word = &text[start..i];
        let before = if start > 0 { b[start - 1] } else { b' ' };
        let after = b.get(i).copied().unwrap_or(b' ');
        let replace = word.len() >= 4
            && before != b'['
            && before != b'_'
            && after != b'_'
            && !word.bytes().all(|c| c.is_ascii_uppercase())
            && !KEEP.contains(&word);
        let h = mix64(fnv1a(word) ^ seed);
        if replace && h % 100 < 35 {
            let new = VOCAB[((h >> 8) % VOCAB.len() as u64) as usize];
            if b[start].is_ascii_uppercase() {
                out.push(new.as_bytes()[0].to_ascii_uppercase() as char);
                out.push_str(&new[1..]);
            } else {
                out.push_str(new);
            }
        } else {
            out.push_str(word);
        }
    }
}

fn vary(text: &str, seed: u64) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    vary_into(text, seed, &mut out);
    out
}

const NAMES: &[&str] = &[
    "Ezra", "Nova", "Mira", "Orin", "Lyra", "Cato", "Iris", "Juno", "Kael", "Luna", "Milo", "Nia",
    "Otto", "Pia", "Quin", "Rhea", "Soren", "Tess", "Ugo", "Vera", "Wren", "Xan", "Yara", "Zeke",
    "Ada", "Bram", "Cleo", "Dax", "Elin", "Finn", "Gaia", "Hugo", "Ines", "Jonas", "Kira", "Leif",
    "Maya", "Nils", "Oona", "Pax",
];

const KERNELS: &[&str] = &[
    "6.12.9-fc-v601",
    "6.14.3-fc-v622",
    "6.16.11-fc-v640",
    "6.18.44-fc-v657",
];

const WEEKDAYS: &[&str] = &[
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
];
const MONTHS: &[&str] = &[
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// (year, month 1-12, day 1-31) of a day number since 1970-01-01 (H. Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `YYYYMMDD_HHMMSS` (UTC) of a Unix time.
fn stamp(t: f64) -> String {
    let secs = t.floor() as i64;
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}{m:02}{d:02}_{:02}{:02}{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// The captured system prompt with its date, host and a few other lines varied.
fn system_prompt(template: &str, t: f64, year_start: f64, k: u64) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let secs = t.floor() as i64;
    let days = secs.div_euclid(86_400);
    let quarter = (((t - year_start) / (YEAR / 4.0)).max(0.0) as usize).min(KERNELS.len() - 1);
    for line in template.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let nl = &line[body.len()..];
        if body.starts_with("Conversation started: ") {
            let (y, m, d) = civil(days);
            let wd = WEEKDAYS[days.rem_euclid(7) as usize];
            out.push_str(&format!(
                "Conversation started: {wd}, {} {d}, {y}",
                MONTHS[m as usize - 1]
            ));
        } else if body.starts_with("Host: Linux (") {
            out.push_str(&format!("Host: Linux ({})", KERNELS[quarter]));
        } else if body.starts_with("Active Hermes profile: ") && k % 7 == 3 {
            out.push_str(&body.replacen("default", "nexus", 1));
        } else {
            out.push_str(body);
        }
        out.push_str(nl);
    }
    out
}

// ---------------------------------------------------------------------------------------
// The captured store, as templates.

/// Column positions, by name, in a table's row as read with `SELECT *`.
struct Cols(Vec<String>);

impl Cols {
    fn of(db: &Connection, table: &str) -> Result<Cols> {
        let mut st = db.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?;
        let names = st
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Cols(names))
    }
    fn at(&self, name: &str) -> usize {
        self.0
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("the captured store has no column {name}"))
    }
}

fn text(v: &Value) -> Option<&str> {
    match v {
        Value::Text(s) => Some(s),
        _ => None,
    }
}

fn real(v: &Value) -> Option<f64> {
    match v {
        Value::Real(f) => Some(*f),
        Value::Integer(i) => Some(*i as f64),
        _ => None,
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Integer(i) => *i,
        Value::Real(f) => *f as i64,
        _ => 0,
    }
}

#[derive(Clone)]
struct TSession {
    row: Vec<Value>,
    msgs: Vec<Vec<Value>>,
    usage: Vec<Vec<Value>>,
}

#[derive(Clone)]
struct Template {
    name: String,
    weight: u32,
    /// Root first, then descendants (compaction lineage) in start order.
    sessions: Vec<TSession>,
    /// Distinct tool-call hex ids (`call_<hex>` / `fc_<hex>`) in order of appearance.
    call_hex: Vec<String>,
    telegram: bool,
}

struct Fixture {
    s: SCols,
    m: MCols,
    u_session: usize,
    u_first: usize,
    u_last: usize,
    session_cols: Vec<String>,
    message_cols: Vec<String>,
    usage_cols: Vec<String>,
    templates: Vec<Template>,
    small_rows: Vec<(String, Vec<Vec<Value>>)>,
    /// `--varied`: the words and word pairs text is varied with.
    lexicon: Option<Lexicon>,
}

struct SCols {
    id: usize,
    source: usize,
    user_id: usize,
    session_key: usize,
    chat_id: usize,
    display_name: usize,
    origin_json: usize,
    system_prompt: usize,
    parent: usize,
    started_at: usize,
    ended_at: usize,
    title: usize,
    message_count: usize,
    tool_call_count: usize,
    api_call_count: usize,
    input_tokens: usize,
    output_tokens: usize,
    rewind_count: usize,
}

struct MCols {
    id: usize,
    session_id: usize,
    role: usize,
    content: usize,
    tool_call_id: usize,
    tool_calls: usize,
    timestamp: usize,
    reasoning: usize,
    reasoning_content: usize,
}

fn rows(db: &Connection, sql: &str) -> Result<Vec<Vec<Value>>> {
    let mut st = db.prepare(sql)?;
    let n = st.column_count();
    let rows = st
        .query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())?
        .collect::<rusqlite::Result<Vec<Vec<Value>>>>()?;
    Ok(rows)
}

/// `call_<hex>` / `fc_<hex>` hex parts in a text, in order.
fn call_hexes(s: &str, out: &mut Vec<String>) {
    for prefix in ["call_", "fc_"] {
        let mut rest = s;
        while let Some(p) = rest.find(prefix) {
            let tail = &rest[p + prefix.len()..];
            let n = tail.bytes().take_while(|c| c.is_ascii_hexdigit()).count();
            if n >= 8 && !out.iter().any(|h| h == &tail[..n]) {
                out.push(tail[..n].to_string());
            }
            rest = &tail[n..];
        }
    }
}

impl Fixture {
    fn load(db: &Connection) -> Result<Fixture> {
        let sc = Cols::of(db, "sessions")?;
        let mc = Cols::of(db, "messages")?;
        let uc = Cols::of(db, "session_model_usage")?;
        let s = SCols {
            id: sc.at("id"),
            source: sc.at("source"),
            user_id: sc.at("user_id"),
            session_key: sc.at("session_key"),
            chat_id: sc.at("chat_id"),
            display_name: sc.at("display_name"),
            origin_json: sc.at("origin_json"),
            system_prompt: sc.at("system_prompt"),
            parent: sc.at("parent_session_id"),
            started_at: sc.at("started_at"),
            ended_at: sc.at("ended_at"),
            title: sc.at("title"),
            message_count: sc.at("message_count"),
            tool_call_count: sc.at("tool_call_count"),
            api_call_count: sc.at("api_call_count"),
            input_tokens: sc.at("input_tokens"),
            output_tokens: sc.at("output_tokens"),
            rewind_count: sc.at("rewind_count"),
        };
        let m = MCols {
            id: mc.at("id"),
            session_id: mc.at("session_id"),
            role: mc.at("role"),
            content: mc.at("content"),
            tool_call_id: mc.at("tool_call_id"),
            tool_calls: mc.at("tool_calls"),
            timestamp: mc.at("timestamp"),
            reasoning: mc.at("reasoning"),
            reasoning_content: mc.at("reasoning_content"),
        };
        let sessions = rows(db, "SELECT * FROM sessions ORDER BY started_at, id")?;
        let messages = rows(db, "SELECT * FROM messages ORDER BY id")?;
        let usage = rows(db, "SELECT * FROM session_model_usage ORDER BY rowid")?;
        let u_session = uc.at("session_id");
        let mut by_id: HashMap<String, TSession> = HashMap::new();
        let mut order = Vec::new();
        for row in sessions {
            let id = text(&row[s.id]).context("session without id")?.to_string();
            order.push(id.clone());
            let msgs = messages
                .iter()
                .filter(|r| text(&r[m.session_id]) == Some(id.as_str()))
                .cloned()
                .collect();
            let usage = usage
                .iter()
                .filter(|r| text(&r[u_session]) == Some(id.as_str()))
                .cloned()
                .collect();
            by_id.insert(id, TSession { row, msgs, usage });
        }
        // Lineages: a session with a (captured) parent joins its root's template.
        let root_of = |id: &str| -> String {
            let mut cur = id.to_string();
            while let Some(p) = by_id
                .get(&cur)
                .and_then(|t| text(&t.row[s.parent]))
                .filter(|p| by_id.contains_key(*p))
            {
                cur = p.to_string();
            }
            cur
        };
        let mut groups: Vec<(String, Vec<TSession>)> = Vec::new();
        for id in &order {
            let root = root_of(id);
            let ts = by_id[id].clone();
            match groups.iter_mut().find(|(r, _)| *r == root) {
                Some((_, v)) => v.push(ts),
                None => groups.push((root, vec![ts])),
            }
        }
        let mut templates = Vec::new();
        for (root, group) in groups {
            let mut call_hex = Vec::new();
            for t in &group {
                for r in &t.msgs {
                    for c in [m.tool_calls, m.tool_call_id] {
                        if let Some(v) = text(&r[c]) {
                            call_hexes(v, &mut call_hex);
                        }
                    }
                }
            }
            let first = &group[0].row;
            let source = text(&first[s.source]).unwrap_or("").to_string();
            let long = group.iter().any(|t| {
                t.msgs
                    .iter()
                    .any(|r| text(&r[m.content]).is_some_and(|c| c.len() > 4000))
            });
            let nexus_api = source == "api_server" && root.starts_with("nexus-");
            // Weights per ~10,000 sessions: mostly short Nexus sessions, some of everything
            // else, the sessions with 24 KB chronicle replies rare (they weigh on the size).
            let weight = if long {
                3
            } else if nexus_api {
                400
            } else {
                match source.as_str() {
                    "nexus" => 1000,
                    "telegram" if int(&first[s.rewind_count]) > 0 => 150,
                    "telegram" => 400,
                    "cli" => 200,
                    "api_server" => 250,
                    _ => 100,
                }
            };
            let telegram = text(&first[s.chat_id]).is_some();
            let t = Template {
                name: root.clone(),
                weight,
                sessions: group,
                call_hex,
                telegram,
            };
            if nexus_api && !long && t.sessions.len() == 1 {
                // The first turn, and the first two turns, of a Nexus session.
                for (turns, weight) in [(1, 5800), (2, 1350)] {
                    if let Some(p) = truncate(&t, turns, &s, &m) {
                        templates.push(Template { weight, ..p });
                    }
                }
            }
            templates.push(t);
        }
        let mut small_rows = Vec::new();
        for table in ["schema_version", "state_meta"] {
            small_rows.push((
                table.to_string(),
                rows(db, &format!("SELECT * FROM {table}"))?,
            ));
        }
        Ok(Fixture {
            s,
            m,
            u_session,
            u_first: uc.at("first_seen"),
            u_last: uc.at("last_seen"),
            session_cols: sc.0,
            message_cols: mc.0,
            usage_cols: uc.0,
            templates,
            small_rows,
            lexicon: None,
        })
    }

    /// Every captured text (system prompts, message texts), in template order.
    fn texts(&self) -> Vec<&str> {
        let mut out = Vec::new();
        for t in &self.templates {
            for ts in &t.sessions {
                out.extend(text(&ts.row[self.s.system_prompt]));
                for r in &ts.msgs {
                    for c in [self.m.content, self.m.reasoning] {
                        out.extend(text(&r[c]).filter(|v| !v.starts_with("[CONTEXT")));
                    }
                }
            }
        }
        out
    }

    fn describe(&self) {
        let total: u32 = self.templates.iter().map(|t| t.weight).sum();
        let (mut sess, mut msgs) = (0.0, 0.0);
        for t in &self.templates {
            let w = t.weight as f64 / total as f64;
            sess += w * t.sessions.len() as f64;
            msgs += w * t.sessions.iter().map(|s| s.msgs.len()).sum::<usize>() as f64;
        }
        eprintln!(
            "synth-store: {} templates from the capture, {:.2} messages per session expected",
            self.templates.len(),
            msgs / sess
        );
        for t in &self.templates {
            let n: Vec<String> = t
                .sessions
                .iter()
                .map(|s| s.msgs.len().to_string())
                .collect();
            eprintln!(
                "  {:>4}/{total}  {:<40} {} messages",
                t.weight,
                t.name,
                n.join("+")
            );
        }
    }
}

/// The template cut after its first `turns` user turns, with the counters adjusted.
fn truncate(t: &Template, turns: usize, s: &SCols, m: &MCols) -> Option<Template> {
    let ts = &t.sessions[0];
    let mut users = 0;
    let end = ts
        .msgs
        .iter()
        .position(|r| {
            if text(&r[m.role]) == Some("user") {
                users += 1;
            }
            users > turns
        })
        .filter(|&n| n > 0)?;
    let msgs: Vec<Vec<Value>> = ts.msgs[..end].to_vec();
    let mut row = ts.row.clone();
    let calls = msgs
        .iter()
        .filter_map(|r| text(&r[m.tool_calls]))
        .map(|c| c.matches("\"call_id\"").count())
        .sum::<usize>();
    let api = msgs
        .iter()
        .filter(|r| text(&r[m.role]) == Some("assistant"))
        .count();
    let full_api = int(&row[s.api_call_count]).max(1);
    row[s.message_count] = Value::Integer(msgs.len() as i64);
    row[s.tool_call_count] = Value::Integer(calls as i64);
    row[s.api_call_count] = Value::Integer(api as i64);
    for c in [s.input_tokens, s.output_tokens] {
        row[c] = Value::Integer(int(&row[c]) * api as i64 / full_api);
    }
    let mut call_hex = Vec::new();
    for r in &msgs {
        for c in [m.tool_calls, m.tool_call_id] {
            if let Some(v) = text(&r[c]) {
                call_hexes(v, &mut call_hex);
            }
        }
    }
    Some(Template {
        name: format!(
            "{} (first {turns} turn{})",
            t.name,
            if turns == 1 { "" } else { "s" }
        ),
        weight: 0,
        sessions: vec![TSession {
            row,
            msgs,
            usage: ts.usage.clone(),
        }],
        call_hex,
        telegram: t.telegram,
    })
}

// ---------------------------------------------------------------------------------------
// Instances.

enum Op {
    Session(Vec<Value>),
    Message(Vec<Value>),
    Usage(Vec<Value>),
}

struct Generator<'a> {
    fx: &'a Fixture,
    seed: u64,
    year_start: f64,
    tool_calls: u64,
    cumulative: Vec<u32>,
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// `YYYYMMDD_HHMMSS_<hex>` → the length of the hex part.
fn gateway_hex_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let ok = b.len() > 16
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'_'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'_'
        && b[16..].iter().all(u8::is_ascii_hexdigit);
    ok.then(|| b.len() - 16)
}

impl<'a> Generator<'a> {
    fn new(fx: &'a Fixture, seed: u64, year_start: f64, tool_calls: u64) -> Self {
        let mut acc = 0;
        let cumulative = fx
            .templates
            .iter()
            .map(|t| {
                acc += t.weight;
                acc
            })
            .collect();
        Generator {
            fx,
            seed,
            year_start,
            tool_calls,
            cumulative,
        }
    }

    /// A new session id shaped like the captured `old` one; `u` is unique per session.
    fn new_id(&self, old: &str, u: u64, t: f64, rng: &mut Rng) -> String {
        if let Some(rest) = old.strip_prefix("nexus-") {
            let world = if rest.starts_with("longrun") {
                "longrun"
            } else {
                VOCAB[(mix64(u) % VOCAB.len() as u64) as usize]
            };
            format!("nexus-{world}-{u:07}")
        } else if old.starts_with("api-") {
            format!("api-{:016x}", mix64(u ^ self.seed.rotate_left(32)))
        } else if is_uuid(old) {
            let (a, b) = (rng.next(), mix64(u.wrapping_add(self.seed << 40)));
            format!(
                "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
                a >> 32,
                (a >> 16) & 0xffff,
                a & 0xfff,
                8 + (b >> 62),
                (b >> 48) & 0xfff,
                b & 0xffff_ffff_ffff
            )
        } else if let Some(n) = gateway_hex_len(old) {
            let bits = (4 * n as u32).min(48);
            let hex = format!("{:0w$x}", perm_bits(u, bits), w = n);
            format!("{}_{hex}", stamp(t))
        } else {
            format!("{old}-{u}")
        }
    }

    /// Instance `k` of a template chosen by weight, starting at `base`; rows in insert order.
    fn instance(&mut self, k: u64, base: f64) -> Vec<Op> {
        let fx = self.fx;
        let (s, m) = (&fx.s, &fx.m);
        let iseed = mix64(self.seed ^ mix64(k));
        let mut rng = Rng::new(iseed);
        let total = *self.cumulative.last().unwrap();
        let pick = rng.below(total as u64) as u32;
        let ti = self.cumulative.iter().position(|&c| pick < c).unwrap();
        let t = &fx.templates[ti];
        let t0 = real(&t.sessions[0].row[s.started_at]).unwrap_or(0.0);
        let scale = 1.0 + 5.0 * rng.unit();
        let at = |old: f64| base + (old - t0) * scale;

        // Fresh tool-call ids, one per captured id.
        let calls: Vec<(String, String)> = t
            .call_hex
            .iter()
            .map(|h| {
                self.tool_calls += 1;
                let bits = (4 * h.len() as u32).min(48);
                (
                    h.clone(),
                    format!("{:0w$x}", perm_bits(self.tool_calls, bits), w = h.len()),
                )
            })
            .collect();
        // Telegram: one of a few dozen users.
        let mut names: Vec<(String, String)> = Vec::new();
        if t.telegram {
            let user = rng.below(NAMES.len() as u64) as usize;
            let row = &t.sessions[0].row;
            let chat = (1_000_000 + user as u64 * 104_729).to_string();
            if let Some(old) = text(&row[s.chat_id]) {
                names.push((old.to_string(), chat));
            }
            if let Some(old) = text(&row[s.display_name]) {
                names.push((old.to_string(), NAMES[user].to_string()));
                names.push((old.to_lowercase(), NAMES[user].to_lowercase()));
            }
        }
        let rename = |v: &str| -> String {
            let mut v = v.to_string();
            for (old, new) in &names {
                if v.contains(old.as_str()) {
                    v = v.replace(old.as_str(), new);
                }
            }
            v
        };
        let recall = |v: &str| -> String {
            let mut v = v.to_string();
            for (old, new) in &calls {
                v = v.replace(old.as_str(), new);
            }
            v
        };

        let mut ids: HashMap<String, String> = HashMap::new();
        let mut titles: HashMap<String, String> = HashMap::new();
        let mut ops = Vec::new();
        for (j, ts) in t.sessions.iter().enumerate() {
            let old_id = text(&ts.row[s.id]).unwrap_or("");
            let started = at(real(&ts.row[s.started_at]).unwrap_or(t0));
            let id = self.new_id(old_id, k * 4 + j as u64, started, &mut rng);
            ids.insert(old_id.to_string(), id.clone());
            let mut row = ts.row.clone();
            row[s.id] = Value::Text(id.clone());
            row[s.started_at] = Value::Real(started);
            if let Some(e) = real(&row[s.ended_at]) {
                row[s.ended_at] = Value::Real(at(e));
            }
            if let Some(p) = text(&row[s.parent]).and_then(|p| ids.get(p)) {
                row[s.parent] = Value::Text(p.clone());
            }
            for c in [
                s.user_id,
                s.session_key,
                s.chat_id,
                s.display_name,
                s.origin_json,
            ] {
                if let Some(v) = text(&row[c]) {
                    row[c] = Value::Text(rename(v));
                }
            }
            if let Some(sp) = text(&row[s.system_prompt]) {
                row[s.system_prompt] = Value::Text(system_prompt(sp, started, self.year_start, k));
            }
            if let Some(title) = text(&row[s.title]) {
                // Unique, as Hermes requires: a child keeps its parent's title plus " #n".
                let parent_title = text(&ts.row[s.parent]).and_then(|p| titles.get(p));
                let new = match (parent_title, title.rfind(" #")) {
                    (Some(pt), Some(i)) => format!("{pt}{}", &title[i..]),
                    _ => format!("{} {k}", vary(&rename(title), iseed)),
                };
                titles.insert(old_id.to_string(), new.clone());
                row[s.title] = Value::Text(new);
            }
            ops.push(Op::Session(row));
            for r in &ts.msgs {
                let mut r = r.clone();
                r[m.session_id] = Value::Text(id.clone());
                if let Some(ts) = real(&r[m.timestamp]) {
                    r[m.timestamp] = Value::Real(at(ts));
                }
                let role = text(&r[m.role]).unwrap_or("").to_string();
                if role == "user" || role == "assistant" {
                    for c in [m.content, m.reasoning, m.reasoning_content] {
                        if let Some(v) = text(&r[c]) {
                            if v.starts_with("[CONTEXT") {
                                continue;
                            }
                            let v = rename(v);
                            r[c] = Value::Text(match &fx.lexicon {
                                None => vary(&v, iseed),
                                Some(lex) if c == m.content => lex.vary(&v, iseed, 1600),
                                Some(lex) => lex.vary(&v, iseed, 600),
                            });
                        }
                    }
                }
                for c in [m.tool_calls, m.tool_call_id] {
                    if let Some(v) = text(&r[c]) {
                        r[c] = Value::Text(recall(v));
                    }
                }
                if let Some(lex) = &fx.lexicon {
                    if let Some(new) =
                        text(&r[m.tool_calls]).and_then(|v| lex.vary_tool_calls(v, iseed))
                    {
                        r[m.tool_calls] = Value::Text(new);
                    }
                    if let Some(v) = text(&r[m.content]).filter(|_| role == "tool") {
                        let v = rename(v);
                        let new = lex
                            .vary_json(&v, iseed, 600)
                            .unwrap_or_else(|| lex.vary(&v, iseed, 1000));
                        r[m.content] = Value::Text(new);
                    }
                }
                ops.push(Op::Message(r));
            }
            for u in &ts.usage {
                let mut u = u.clone();
                u[fx.u_session] = Value::Text(id.clone());
                for c in [fx.u_first, fx.u_last] {
                    if let Some(v) = real(&u[c]) {
                        u[c] = Value::Real(at(v));
                    }
                }
                ops.push(Op::Usage(u));
            }
        }
        ops
    }
}

// ---------------------------------------------------------------------------------------
// Writing.

struct Writer<'c> {
    session: rusqlite::Statement<'c>,
    message: rusqlite::Statement<'c>,
    usage: rusqlite::Statement<'c>,
    m_id: usize,
    m_role: usize,
    m_content: usize,
    m_tool_calls: usize,
    sessions: u64,
    messages: u64,
    bytes: u64,
    variety: Variety,
}

impl<'c> Writer<'c> {
    fn new(db: &'c Connection, fx: &Fixture) -> Result<Self> {
        let insert = |table: &str, cols: &[String], skip: Option<usize>| {
            let names: Vec<&str> = cols
                .iter()
                .enumerate()
                .filter(|(i, _)| Some(*i) != skip)
                .map(|(_, n)| n.as_str())
                .collect();
            let marks: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
            format!(
                "INSERT INTO {table} ({}) VALUES ({})",
                names.join(", "),
                marks.join(", ")
            )
        };
        Ok(Writer {
            session: db.prepare(&insert("sessions", &fx.session_cols, None))?,
            message: db.prepare(&insert("messages", &fx.message_cols, Some(fx.m.id)))?,
            usage: db.prepare(&insert("session_model_usage", &fx.usage_cols, None))?,
            m_id: fx.m.id,
            m_role: fx.m.role,
            m_content: fx.m.content,
            m_tool_calls: fx.m.tool_calls,
            sessions: 0,
            messages: 0,
            bytes: 0,
            variety: Variety::default(),
        })
    }

    fn write(&mut self, op: Op) -> Result<()> {
        match op {
            Op::Session(row) => {
                self.sessions += 1;
                self.session
                    .execute(rusqlite::params_from_iter(row.iter()))
                    .context("inserting a session")?;
            }
            Op::Message(row) => {
                self.messages += 1;
                self.bytes += row
                    .iter()
                    .map(|v| text(v).map_or(0, str::len) as u64)
                    .sum::<u64>();
                self.variety.add(
                    text(&row[self.m_role]).unwrap_or(""),
                    text(&row[self.m_content]),
                    text(&row[self.m_tool_calls]),
                );
                let m_id = self.m_id;
                let vals = row
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != m_id)
                    .map(|(_, v)| v);
                self.message
                    .execute(rusqlite::params_from_iter(vals))
                    .context("inserting a message")?;
            }
            Op::Usage(row) => {
                self.usage
                    .execute(rusqlite::params_from_iter(row.iter()))
                    .context("inserting a model-usage row")?;
            }
        }
        Ok(())
    }
}

/// Generates instances `first..` until `target` sessions are written, spreading their
/// start times over `[from, from + span)`, with a few instances in flight at once.
fn fill(
    w: &mut Writer,
    g: &mut Generator,
    first: u64,
    target: u64,
    from: f64,
    span: f64,
    started: Instant,
) -> Result<()> {
    let mut rng = Rng::new(g.seed ^ first.rotate_left(17) ^ 0xF111);
    let mut pool: Vec<std::vec::IntoIter<Op>> = Vec::new();
    let mut k = first;
    let mut planned = 0u64; // sessions of the instances started so far
    let base_sessions = w.sessions;
    let mut next_report = 10_000;
    loop {
        while pool.len() < CONCURRENT && planned < target {
            let base = from + (planned as f64 + rng.unit()) * span / target as f64;
            let ops = g.instance(k, base);
            k += 1;
            planned += ops.iter().filter(|o| matches!(o, Op::Session(_))).count() as u64;
            pool.push(ops.into_iter());
        }
        if pool.is_empty() {
            break;
        }
        let i = rng.below(pool.len() as u64) as usize;
        match pool[i].next() {
            Some(op) => w.write(op)?,
            None => {
                pool.swap_remove(i);
            }
        }
        let done = w.sessions - base_sessions;
        if done >= next_report {
            next_report += 10_000;
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "synth-store: {done} sessions, {} messages, {} MB of text, {secs:.0} s",
                w.messages,
                w.bytes >> 20
            );
        }
    }
    Ok(())
}

fn open_fast(path: &Path, journal: &str) -> Result<Connection> {
    let db = Connection::open(path)?;
    db.pragma_update(None, "journal_mode", journal)?;
    db.pragma_update(None, "synchronous", "OFF")?;
    db.pragma_update(None, "cache_size", -262_144)?; // 256 MiB
    db.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(db)
}

fn report(db: &Connection, path: &Path, started: Instant) -> Result<()> {
    let count = |t: &str| -> Result<i64> {
        Ok(db.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))?)
    };
    let (s, m) = (count("sessions")?, count("messages")?);
    let size = std::fs::metadata(path)?.len();
    eprintln!(
        "synth-store: {}: {s} sessions, {m} messages, {size} bytes ({:.2} GB), {:.0} s",
        path.display(),
        size as f64 / 1e9,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn generate(args: &Args, fixture_db: &Connection, fx: &Fixture, started: Instant) -> Result<()> {
    if args.out.exists() && !args.force {
        bail!(
            "{} exists (use --force to replace it, or --append-day)",
            args.out.display()
        );
    }
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    fx.describe();
    // Build under a temporary name, renamed into place only when complete.
    let mut tmp_name = args.out.as_os_str().to_owned();
    tmp_name.push(".partial");
    let tmp = PathBuf::from(tmp_name);
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = tmp.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    let mut db = open_fast(&tmp, "WAL")?;

    // The captured schema, in its order (FTS5 shadow tables come with their virtual table).
    let schema = rows(
        fixture_db,
        "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid",
    )?;
    let virtuals: Vec<String> = schema
        .iter()
        .filter(|r| text(&r[2]).is_some_and(|s| s.starts_with("CREATE VIRTUAL TABLE")))
        .filter_map(|r| text(&r[1]).map(str::to_string))
        .collect();
    let variety;
    let tx = db.transaction()?;
    for r in &schema {
        let (kind, name, sql) = (
            text(&r[0]).unwrap_or(""),
            text(&r[1]).unwrap_or(""),
            text(&r[2]).unwrap_or(""),
        );
        let shadow = kind == "table"
            && !sql.starts_with("CREATE VIRTUAL TABLE")
            && virtuals.iter().any(|v| name.starts_with(&format!("{v}_")));
        if name == "sqlite_sequence" || shadow {
            continue;
        }
        tx.execute_batch(sql)
            .with_context(|| format!("creating {name}"))?;
    }
    for (table, rows) in &fx.small_rows {
        for row in rows {
            let marks: Vec<&str> = row.iter().map(|_| "?").collect();
            tx.execute(
                &format!("INSERT INTO {table} VALUES ({})", marks.join(",")),
                rusqlite::params_from_iter(row.iter()),
            )?;
        }
    }
    {
        let mut w = Writer::new(&tx, fx)?;
        let year_start = args.end as f64 - YEAR;
        let mut g = Generator::new(fx, args.seed, year_start, 0);
        fill(&mut w, &mut g, 0, args.sessions, year_start, YEAR, started)?;
        eprintln!(
            "synth-store: {} sessions, {} messages written; committing",
            w.sessions, w.messages
        );
        variety = w.variety.report();
    }
    tx.commit()?;
    db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    db.pragma_update(None, "synchronous", "NORMAL")?;
    drop(db);
    std::fs::rename(&tmp, &args.out)?;
    let db = Connection::open(&args.out)?;
    report(&db, &args.out, started)?;
    eprintln!("synth-store: {variety}");
    Ok(())
}

/// Prints how varied an existing store's messages are.
fn measure(path: &Path) -> Result<()> {
    let db = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut st = db.prepare("SELECT role, content, tool_calls FROM messages ORDER BY id")?;
    let mut rows = st.query([])?;
    let mut v = Variety::default();
    while let Some(r) = rows.next()? {
        let role: Option<String> = r.get(0)?;
        let content: Option<String> = r.get(1).ok();
        let calls: Option<String> = r.get(2).ok();
        v.add(
            role.as_deref().unwrap_or(""),
            content.as_deref(),
            calls.as_deref(),
        );
    }
    println!("{}: {}", path.display(), v.report());
    Ok(())
}

fn append_day(args: &Args, fx: &Fixture, started: Instant) -> Result<()> {
    if !args.out.is_file() {
        bail!(
            "{} does not exist (generate it first, without --append-day)",
            args.out.display()
        );
    }
    let mut db = Connection::open(&args.out)?;
    db.busy_timeout(std::time::Duration::from_secs(10))?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    let (count, max_start): (i64, f64) = db.query_row(
        "SELECT COUNT(*), COALESCE(MAX(started_at), 0) FROM sessions",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let tool_rows: i64 = db.query_row(
        "SELECT COUNT(*) FROM messages WHERE tool_calls IS NOT NULL",
        [],
        |r| r.get(0),
    )?;
    let day = ((max_start / 86_400.0).floor() + 1.0) * 86_400.0;
    eprintln!(
        "synth-store: appending {} sessions on {} to {} ({count} sessions)",
        args.day_sessions,
        &stamp(day)[..8],
        args.out.display()
    );
    let tx = db.transaction()?;
    {
        let mut w = Writer::new(&tx, fx)?;
        // Instance numbers above every earlier one (each instance made >= 1 session), tool
        // calls above every earlier one (each tool-call row holds >= 1 call).
        let year_start = args.end as f64 - YEAR;
        let mut g = Generator::new(fx, args.seed, year_start, 4 * tool_rows as u64 + 1);
        fill(
            &mut w,
            &mut g,
            count as u64,
            args.day_sessions,
            day,
            86_400.0,
            started,
        )?;
        eprintln!(
            "synth-store: appended {} sessions, {} messages",
            w.sessions, w.messages
        );
    }
    tx.commit()?;
    report(&db, &args.out, started)
}
