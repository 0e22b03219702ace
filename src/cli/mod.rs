//! Command-line definitions (clap derive). Nothing outside `cli` sees clap
//! types: [`map`] turns each command's arguments into its clap-free
//! configuration (`crate::config`), and enums here mirror the domain's.

mod map;
pub mod shell;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Turn what the Hermes Agent harness recorded into SFT and DPO training data,
/// and inject Nexus perception events into Hermes.
#[derive(Debug, Parser)]
#[command(name = "hermes-harvest", version, about, long_about = None)]
#[command(after_long_help = exit_codes())]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Export conversations as SFT or DPO JSONL.
    Export(Box<ExportArgs>),
    /// List what was found under HERMES_HOME: stores, schema versions,
    /// sessions and messages per channel, time range.
    Sources(SourcesArgs),
    /// Send a Nexus perception event to the Hermes API server.
    Send(Box<SendArgs>),
    /// Check a JSONL file against the output schemas and the semantic rules.
    Validate(ValidateArgs),
    /// Remove sessions from a cumulative export and keep them out of every
    /// later run of its state.
    Forget(ForgetArgs),
    /// Print a shell completion script on stdout.
    Completions(CompletionsArgs),
    /// Print the man page (roff) on stdout, or write one page per command
    /// into a directory.
    Man(ManArgs),
}

/// The exit codes, one a line, for the end of `--help` and the man page.
fn exit_codes() -> String {
    let mut out = String::from("Exit codes:\n");
    for (code, meaning) in crate::exit::TABLE {
        out.push_str(&format!("  {code:>2}  {meaning}\n"));
    }
    out
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write hermes-harvest.1 and hermes-harvest-<command>.1 into this existing directory
    /// instead of printing hermes-harvest.1
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Where the Hermes data lives.
#[derive(Debug, Args, Clone)]
pub struct HomeArgs {
    /// Hermes home directory [default: $HERMES_HOME, else ~/.hermes]
    #[arg(long, value_name = "DIR")]
    pub hermes_home: Option<PathBuf>,
    /// Read the stores of this profile (HERMES_HOME/profiles/NAME)
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Sft,
    Dpo,
}

/// The channels, as `model::Channel::of` decides them from the session's
/// source (state.db's `sessions.source`, else a session file's platform).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChannelArg {
    /// Source nexus, an api_server id with --nexus-prefix, or a title "nexus…"
    Nexus,
    /// Source telegram
    Telegram,
    /// Source cli, tui or oneshot (the terminal, `hermes chat -q`)
    Tui,
    /// Everything else (other api_server sessions, webhooks, other platforms)
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExcludeArg {
    /// Sessions hidden in the desktop app (`sessions.hidden`)
    Hidden,
    /// Sessions the user archived (`sessions.archived`)
    Archived,
    /// Sessions the idle sweep archived (`sessions.auto_archived`)
    AutoArchived,
    /// Pinned sessions (`sessions.pinned`)
    Pinned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EstimateFamilyArg {
    /// The family of the model config.yaml serves, if recognised; else generic
    Auto,
    /// Conservative for every tokenizer measured (1.07-1.84x the real count)
    Generic,
    /// Qwen 2 / 2.5 / 3 / 3.5 / 3.6 and Hermes-4-14B
    Qwen,
    /// Llama 3.x, Hermes 3, Hermes-4-70B and -405B
    Llama3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetArg {
    /// Tool-call arguments as JSON objects (TRL, mlx-lm, axolotl)
    Hf,
    /// Tool-call arguments as JSON strings (OpenAI fine-tuning)
    Openai,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DpoStyleArg {
    /// TRL conversational: prompt/chosen/rejected message lists
    Conversational,
    /// system/prompt/chosen/rejected strings (mlx-lm-lora)
    Flat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ToolsArg {
    /// The tools each sample calls, plus a few other tools the session offered
    Used,
    /// Every tool the session offered
    All,
    /// No tool definitions
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SignalArg {
    /// An undone reply, the same prompt again: the new answer beats the undone one
    Rewind,
    /// A prompt sent again right after its answer: the later answer beats the first
    Regenerate,
    /// A failed tool call, then one that works at the same step: the second wins
    ToolRetry,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub home: HomeArgs,
    /// Output shape
    #[arg(long, value_enum, default_value = "sft")]
    pub format: FormatArg,
    /// Channels to export (comma-separated or repeated) [default: all]. A session's channel
    /// comes from its source (state.db's, else its file's platform); a telegram or tui
    /// source wins over a "nexus" title
    #[arg(long, value_enum, value_delimiter = ',')]
    pub channel: Vec<ChannelArg>,
    /// Raw `sessions.source` values to export (e.g. api_server, webhook)
    #[arg(long, value_delimiter = ',')]
    pub source: Vec<String>,
    /// Only these session ids (comma-separated or repeated)
    #[arg(long, value_delimiter = ',')]
    pub session: Vec<String>,
    /// Only sessions whose upstream model matches
    #[arg(long)]
    pub model: Vec<String>,
    /// Leave out sessions with these listing flags (state.db v31, Hermes 0.22+;
    /// comma-separated or repeated), counted in the summary as <flag>_session.
    /// By default every session is exported, whatever its flags
    #[arg(long, value_enum, value_delimiter = ',', value_name = "FLAG")]
    pub exclude: Vec<ExcludeArg>,
    /// Only turns at or after this time: a date, RFC 3339, or a duration such as 7d, 12h
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only turns before this time (same forms as --since)
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// Skip sessions with fewer complete user turns than this
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub min_turns: usize,
    /// Token budget of a whole rendered sample (system prompt, tool definitions, messages
    /// and the chat template's tokens). Set your trainer's max length to at least this
    #[arg(long, default_value_t = 2048, value_name = "N", value_parser = parse_max_tokens)]
    pub max_tokens: usize,
    /// Count tokens exactly with this model's tokenizer and chat template: the model
    /// directory you give your trainer, its tokenizer.json, or a model id ORG/NAME found
    /// offline in the local Hugging Face cache (HF_HUB_CACHE, HF_HOME/hub,
    /// XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub) [default: an estimate,
    /// see --estimate-family]
    #[arg(long, value_name = "PATH|ORG/NAME")]
    pub tokenizer: Option<PathBuf>,
    /// Without --tokenizer: the estimate to count with. A family's estimate is at most
    /// 15% over its tokenizer's count of the golden samples and never under it; the
    /// generic one fits every tokenizer measured but runs up to 1.84x
    #[arg(long, value_enum, default_value = "auto", value_name = "FAMILY")]
    pub estimate_family: EstimateFamilyArg,
    /// Tool definitions a sample carries: the tools it calls plus a few others the session
    /// offered (`used`), every offered tool (`all`), or none
    #[arg(long, value_enum, default_value = "used")]
    pub tools: ToolsArg,
    /// With `--tools used`: other offered tools a sample carries at most besides those it
    /// calls (each only if it fits), so that the model learns to choose
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub distractors: usize,
    /// Share of the budget that the turns before an SFT sample starting mid-session (a later
    /// part of a long session, a turn exported incrementally) may take as context; those
    /// turns are trained again by trainers that learn every assistant turn. 0 turns it off
    #[arg(long, default_value_t = 0.5, value_name = "F", value_parser = parse_share)]
    pub sft_context: f64,
    /// System prompt policy: `soul` (only the SOUL.md persona part of what the session ran
    /// with), `session` (all of it, Hermes's own harness text included), `none`, or a FILE
    /// to use instead. A sample that does not fit with `session` falls back to `soul`, one
    /// that does not fit with `soul` to none (the summary and the manifest count them)
    #[arg(long, default_value = "soul", value_name = "soul|session|none|FILE")]
    pub system_prompt: String,
    /// Keep assistant reasoning as `reasoning_content`
    #[arg(long)]
    pub include_reasoning: bool,
    /// Tool-call argument flavour
    #[arg(long, value_enum, default_value = "hf")]
    pub target: TargetArg,
    /// DPO line style
    #[arg(long, value_enum, default_value = "conversational")]
    pub dpo_style: DpoStyleArg,
    /// Preference signals to mine for DPO [default: all]
    #[arg(long, value_enum, value_delimiter = ',')]
    pub signals: Vec<SignalArg>,
    /// Session-id prefix that makes an `api_server` session a nexus one (the ids `send`
    /// uses start with nexus-); an empty prefix turns this rule off
    #[arg(long, default_value = "nexus-", value_name = "PREFIX")]
    pub nexus_prefix: String,
    /// `-` for stdout, FILE.jsonl (written atomically), or DIR/ for train/valid split plus manifest
    #[arg(long, short = 'o', default_value = "-", value_name = "-|FILE|DIR/")]
    pub out: String,
    /// Share of sessions that go to valid.jsonl with --out DIR/
    #[arg(long, default_value_t = 0.05, value_name = "F", value_parser = parse_fraction)]
    pub valid_fraction: f64,
    /// Incremental runs: remember what was exported in this state file
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Do not redact secrets and home-directory paths
    #[arg(long)]
    pub no_redact: bool,
    /// Any unreadable input is fatal instead of skipped
    #[arg(long)]
    pub strict: bool,
    /// Give up for good on samples the chat template fails to render (skipped as
    /// template_error) instead of keeping them pending for a later run
    #[arg(long)]
    pub skip_unrenderable: bool,
    /// Exit 6 when the export leaves no line at all (0 stays "success, nothing new")
    #[arg(long)]
    pub fail_on_empty: bool,
    /// Print errors only (and the one warning naming what was dropped, see --fail-on-drop)
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Exit with code 7 when a selected turn or pair was dropped (over the budget even with
    /// the shortest system prompt, or refused by the chat template); the outputs and the
    /// state are still written
    #[arg(long)]
    pub fail_on_drop: bool,
    /// Put the system prompt at the start of the first user turn instead of a system
    /// message, for chat templates that refuse a system role (Gemma)
    #[arg(long)]
    pub fold_system: bool,
    /// Worker threads that rebuild, redact, format and count sessions (1: everything on one
    /// thread; the output is the same bytes whatever the number) [default: the cores this
    /// process may use]
    #[arg(long, short = 'j', value_name = "N", value_parser = parse_threads)]
    pub threads: Option<usize>,
    // --- curation (see `curate`) ---
    /// Leave out the `meta` provenance object (always left out with --target openai)
    #[arg(long)]
    pub no_meta: bool,
    /// Write exact duplicate samples as often as they occur
    #[arg(long)]
    pub keep_duplicates: bool,
    /// Exchanges kept per normalised exchange (numbers, coordinates and times masked);
    /// 0 keeps them all
    #[arg(long, default_value_t = crate::curate::DEFAULT_NEAR_DUPLICATE_CAP, value_name = "N")]
    pub near_duplicate_cap: usize,
    /// Skip SFT turns whose reply is shorter than N characters
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub min_reply_chars: usize,
    /// Write nothing (no output, no state, no lock): print on stderr what the run would
    /// write, per channel and signal, with its tokens and skips
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Session ids to remove
    #[arg(value_name = "SESSION_ID")]
    pub sessions: Vec<String>,
    /// Also remove every line whose first turn is before this time (same forms as --since)
    #[arg(long, value_name = "WHEN")]
    pub before: Option<String>,
    /// The cumulative output: FILE.jsonl or DIR/
    #[arg(long, short = 'o', value_name = "FILE|DIR/")]
    pub out: String,
    /// The state file of that output
    #[arg(long, value_name = "FILE")]
    pub state: PathBuf,
    /// Record ids that no output line or state entry knows
    #[arg(long)]
    pub force: bool,
    /// List the lines that would be removed; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print errors only
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct SourcesArgs {
    #[command(flatten)]
    pub home: HomeArgs,
    /// Session-id prefix that marks API-server sessions as Nexus traffic
    #[arg(long, default_value = "nexus-", value_name = "PREFIX")]
    pub nexus_prefix: String,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum EventKindArg {
    ArchonEntering,
    ArchonMaterialized,
    ArchonDeparted,
    SceneChange,
    Tick,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Event type (or use --event)
    #[arg(value_enum, required_unless_present = "event")]
    pub kind: Option<EventKindArg>,
    /// JSON event file, or - for stdin (schemas/perception-event.schema.json)
    #[arg(long, value_name = "FILE|-", conflicts_with = "kind")]
    pub event: Option<String>,
    /// Who the event is about
    #[arg(long)]
    pub actor: Option<String>,
    /// Position in the world, X,Y,Z
    #[arg(long, value_name = "X,Y,Z", allow_hyphen_values = true)]
    pub at: Option<String>,
    /// Free text detail
    #[arg(long)]
    pub detail: Option<String>,
    /// World name (the default session is nexus-<world>)
    #[arg(long, default_value = "world")]
    pub world: String,
    /// Hermes session id [default: nexus-<world>]
    #[arg(long)]
    pub session: Option<String>,
    /// API server base URL [env: HERMES_API_URL; else HERMES_HOME config; else http://127.0.0.1:8642]
    #[arg(long)]
    pub url: Option<String>,
    /// Print the raw JSON response instead of the reply text
    #[arg(long)]
    pub json: bool,
    /// After sending, check the stores until the session holds this turn and a reply
    #[arg(long)]
    pub verify: bool,
    /// Seconds to wait for the HTTP reply
    #[arg(long, default_value_t = 120, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=MAX_WAIT_SECS))]
    pub timeout: u64,
    /// Seconds to poll the stores with --verify
    #[arg(long, default_value_t = 30, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=MAX_WAIT_SECS))]
    pub verify_timeout: u64,
    #[command(flatten)]
    pub home: HomeArgs,
    /// Print errors only
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Trust the CA certificates in this PEM file for an https:// URL (instead of the system's)
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Allow sending the API key over plain http:// to a host that is not this machine (it travels in the clear)
    #[arg(long)]
    pub insecure_http: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShapeArg {
    Sft,
    Dpo,
    DpoFlat,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// JSONL file to check (- for stdin), or an export directory
    pub file: String,
    /// Expected shape [default: detected from the first line]
    #[arg(long, value_enum)]
    pub format: Option<ShapeArg>,
    /// Flag rows whose rendered sample exceeds N tokens
    #[arg(long, value_name = "N", value_parser = parse_max_tokens)]
    pub max_tokens: Option<usize>,
    /// Count exactly with this model's tokenizer and chat template (see export --tokenizer)
    #[arg(long, value_name = "PATH", requires = "max_tokens")]
    pub tokenizer: Option<PathBuf>,
    /// With a directory: check it against this state file's committed lengths and tails
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Print errors only
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

// Bad values are usage errors (exit 2), caught by clap before anything runs.
// (`--url` is checked by `send` itself: clap would echo a URL's credentials.)

/// Longest `--timeout` / `--verify-timeout`: a day (larger values would
/// overflow a deadline).
pub const MAX_WAIT_SECS: u64 = 86_400;

/// `--max-tokens`: at least 64.
fn parse_max_tokens(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number"))?;
    if n < 64 {
        return Err("must be at least 64".to_string());
    }
    Ok(n)
}

/// `--threads`: 1 to 256.
fn parse_threads(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number"))?;
    if !(1..=256).contains(&n) {
        return Err("must be from 1 to 256".to_string());
    }
    Ok(n)
}

/// `--sft-context`: a number in [0, 1].
fn parse_share(s: &str) -> Result<f64, String> {
    let f: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if !(0.0..=1.0).contains(&f) {
        return Err("must be between 0 and 1".to_string());
    }
    Ok(f)
}

/// `--valid-fraction`: a number in [0, 1).
fn parse_fraction(s: &str) -> Result<f64, String> {
    let f: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if !(0.0..1.0).contains(&f) {
        return Err("must be at least 0 and below 1".to_string());
    }
    Ok(f)
}
