//! The `export` pipeline: stores → sessions → rebuilt conversations →
//! selection ([`crate::select`]) → formatter → redaction → output, with a
//! summary on stderr ([`summary`]) and, for directory output, a manifest
//! ([`crate::manifest`]). With `--state`, what the run covered is folded
//! into the state file ([`crate::state`]) after the outputs are in place.

mod summary;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Result;

use crate::config::{EstimateChoice, ExportConfig};
use crate::coverage;
use crate::curate::dedupe::ExchangeKeys;
use crate::curate::meta::{self, Meta};
use crate::curate::{Curator, quality};
use crate::dataset::{Dataset, LineFigures};
use crate::exit::{self, Failure};
use crate::format::SystemPolicy;
use crate::format::fit::Fitter;
use crate::format::tools::{SessionTools, ToolsPolicy, called_names};
use crate::format::{self, Exchange, FormatOptions, dpo, sft, system_chain};
use crate::hermes_settings::HermesSettings;
use crate::home::HermesHome;
use crate::manifest::{Counting, Inputs, Manifest, SourceEntry, Totals, tilde};
use crate::model::{Channel, Origin, Role, Session};
use crate::output::Output;
use crate::paths::{DIR_FILES, Dest, Plan};
use crate::pool::Flow;
use crate::rebuild::{self, Rebuilt, Signal};
use crate::redact::Redactor;
use crate::report::Report;
use crate::select::{self, Dedupe};
use crate::shape::Shape;
use crate::skip::Skip;
use crate::source::Stores;
use crate::source::session_files::ToolCatalog;
use crate::state::Written;
use crate::state::{Covered, TurnSelection};
use crate::state::{RunCoverage, RunState};
use crate::tokens::family::Family;
use crate::tokens::{Counter, Estimate, Sample};

/// What formatting a session needs besides the session.
struct Kit {
    opts: FormatOptions,
    counter: Counter,
    /// The tool catalog each preparer starts from (a copy each: it reads
    /// snapshot files lazily, and answers the same whatever was asked).
    catalog: ToolCatalog,
}

/// The tokenizer family whose estimate counts without `--tokenizer`:
/// the one asked for, or with `auto` the family of the model Hermes
/// serves (`config.yaml`), said once on stderr; `None` is the generic one.
fn estimate_family(
    cfg: &ExportConfig,
    home: &crate::home::HermesHome,
    report: &Report,
) -> Option<Family> {
    if cfg.tokenizer.is_some() {
        return None;
    }
    match cfg.estimate {
        EstimateChoice::Generic => None,
        EstimateChoice::Family(f) => Some(f),
        EstimateChoice::Auto => {
            let serving = crate::tokens::hub::Serving::of(&home.dir)?;
            let family = Family::of_model(&serving.model)?;
            report.info(format!(
                "estimating tokens for the {} family, from the model config.yaml serves ({}); --estimate-family generic for the generic estimate, --tokenizer for exact counts",
                family.as_str(),
                serving.model
            ));
            Some(family)
        }
    }
}

impl Kit {
    /// Tokens the system prompt alone costs a sample (counted once per
    /// distinct prompt: the cached message keeps them).
    fn system_tokens(&mut self, system: &sft::SystemMsg) -> usize {
        if let Some(n) = system.tokens.get() {
            return *n;
        }
        let text = system.text.as_str();
        let n = match &self.counter {
            Counter::Estimate => Estimate::system(text),
            Counter::Family(_) | Counter::Exact(_) => self
                .counter
                .count(&Sample {
                    system: Some(text),
                    messages: &[],
                    tools: None,
                })
                .map_or_else(|_| Estimate::system(text), |c| c.total),
        };
        *system.tokens.get_or_init(|| n)
    }
}

/// Everything one run carries from session to session.
struct Run<'a> {
    cfg: &'a ExportConfig,
    kit: Kit,
    covered: Covered<'a>,
    totals: Totals,
    coverage: RunCoverage,
    dedupe: Dedupe,
    output: Output<'a>,
    redactor: Option<Redactor>,
    /// Provenance, duplicates, quality rules, dry-run figures.
    curate: Curator<'a>,
    /// Sessions the template failed on (kept pending with `--state`).
    render_failed: Vec<String>,
    /// Of those, the sessions kept pending.
    pending_renders: usize,
    /// Replies exported by an earlier run and since regenerated, undone or
    /// rewound (SFT: their lines are retracted after the commit), and the
    /// rows looked at.
    superseded: BTreeMap<String, crate::cmd::forget::Superseded>,
    superseded_rows: Vec<i64>,
    /// The export rules this run follows, and (when a committed state's
    /// are older) what the files hold for the one-time re-check of the
    /// covered turns (see `recheck`).
    rules: u32,
    recheck: Option<Arc<crate::recheck::Held>>,
    /// Lines and turns (pairs) the re-check wrote.
    rechecked: (u64, u64),
    /// In a re-check, the state.db sessions an ordinary night would have
    /// read: only those are looked at for superseded replies, as on any
    /// night (the others' rejected rows were never exported).
    ordinary: Option<std::collections::HashSet<String>>,
}

/// A rebuilt session ready to format.
struct Prepared {
    session: Session,
    channel: Channel,
    rebuilt: Rebuilt,
    /// The system prompts to try, in order, with their names.
    systems: Vec<(&'static str, Option<Arc<sft::SystemMsg>>)>,
    tools: SessionTools,
}

/// What a preparer made of one session read: the session prepared
/// (`None`: harness traffic only), the figures the run's totals take from
/// it, and (with more than one thread) its samples formatted ahead.
struct Worked {
    id: String,
    origin: Option<Origin>,
    prepared: Option<Prepared>,
    history: crate::rebuild::RebuildStats,
    /// Called tools' definitions borrowed from other sessions.
    borrowed: usize,
    /// What redacting it counted.
    redactions: BTreeMap<&'static str, usize>,
    ahead: Option<Ahead>,
}

/// A session's samples formatted on a worker, for the selection the worker
/// expects: the one the run makes unless curation (forgotten turns, the
/// near-duplicate cap, the other split) changes it. The run takes them
/// when its selection is that one, else it formats the session itself.
/// Formatting is a function of the prepared session, the selection and
/// the options alone (token counts included), so the bytes are the same.
struct Ahead {
    selected: Vec<bool>,
    copied: Vec<bool>,
    formatted: Formatted,
    /// The near-duplicate keys of the exchanges the worker selected (SFT),
    /// made on the worker: they depend on the exchange alone, so the sink
    /// takes them whatever it selects, and makes any others it asks for.
    keys: ExchangeKeys,
}

enum Formatted {
    /// Per unit with a selected exchange: its first exchange, its name and
    /// its samples.
    Sft(Vec<(usize, String, sft::SftOutcome)>),
    Dpo(dpo::DpoOutcome),
}

impl Ahead {
    /// The formatted samples, when made for the selection `sel`.
    fn take_for(ahead: &mut Option<Ahead>, sel: &TurnSelection) -> Option<Formatted> {
        ahead
            .take()
            .filter(|a| a.selected == sel.selected && a.copied == sel.copied)
            .map(|a| a.formatted)
    }
}

/// What one thread needs to prepare sessions: its own copies of the tool
/// catalog, the system-message cache, the redactor and (to format ahead)
/// the counter.
struct Preparer<'a> {
    cfg: &'a ExportConfig,
    opts: FormatOptions,
    catalog: ToolCatalog,
    /// System messages already made, shared by the sessions that use them.
    system_json: sft::SystemCache,
    redactor: Option<Redactor>,
    /// The counter to format ahead with (workers only).
    ahead: Option<Counter>,
    /// What earlier runs covered.
    covered: Covered<'a>,
    /// Other stores may hold copies of state.db turns: which of their
    /// sessions' turns are copies is known in the sink only.
    copies: bool,
    /// The `forget --before` cut-off: no pair's prompt history reaches
    /// before it.
    cut: Option<f64>,
    /// The run's export rules and re-check (see `recheck`).
    rules: u32,
    recheck: Option<Arc<crate::recheck::Held>>,
}

/// Sessions between the reader and the sink at most, per worker thread:
/// two batches each (see `pool`), enough to keep every core busy while one
/// long session is worked on.
const IN_FLIGHT_PER_THREAD: usize = crate::pool::BATCH_ITEMS;

/// Message bytes between the reader and the sink at most (or one session,
/// whatever its size): what bounds the pool's memory, as the item count
/// alone would not for long sessions.
const IN_FLIGHT_BYTES: usize = 16 << 20;

pub fn run(mut cfg: ExportConfig) -> Result<u8> {
    let home = cfg.home.resolve()?;
    let mut report = Report::new(cfg.strict, cfg.quiet);
    // The template is probed before any store, lock or state is touched.
    let with_system = cfg.system != SystemPolicy::None;
    let family = estimate_family(&cfg, &home, &report);
    let mut counter = Counter::for_export(
        cfg.tokenizer.as_deref(),
        family,
        with_system,
        cfg.fold_system,
    )?;
    // Every path this run writes, resolved and checked first.
    let plan = crate::paths::plan(
        &cfg.out,
        cfg.state.as_deref(),
        &home,
        cfg.system_file.as_deref(),
    )?;
    // The last turn's tokens are a manifest figure: without a manifest
    // they are not counted (one render a sample instead of two).
    if !matches!(plan.dest, Dest::Dir(_)) {
        counter.without_last_turn();
    }
    // One run at a time per state file (or per output). A dry run writes
    // nothing, not even a lock or a cleanup.
    let dry_run = cfg.curate.dry_run;
    crate::source::sqlite::create_no_side_files(dry_run);
    let _lock = if dry_run { None } else { plan.take_lock()? };
    if !dry_run {
        remove_leftovers(&plan);
    }
    let mut state = load_state(&plan, dry_run)?;
    // A cumulative output belongs to one state, format and style.
    let identity = coverage::identity(&cfg, &plan);
    coverage::check_output(state.as_ref(), &plan, &identity)?;
    let mut stores = open_stores(&cfg, &home, state.as_ref(), &mut report)?;
    let mut redactor = open_redactor(&cfg, &home, &mut report)?;
    let top = watermark(&mut stores, state.as_ref(), &report)?;
    let stores = stores;
    let selection = coverage::selection(&cfg);
    system_prompt(&mut cfg.system, &home, redactor.as_mut(), &report);
    let cfg = &cfg;
    let output = open_output(cfg, &plan, state.as_mut(), &identity)?;
    let rules = crate::recheck::rules();
    let recheck = match (&state, &plan.dest) {
        (Some(st), Dest::Dir(_) | Dest::File(_)) if crate::recheck::due(st, rules) => Some(
            Arc::new(crate::recheck::Held::read(st, &path_in(&plan.dest))?),
        ),
        _ => None,
    };
    let mut run = Run::new(cfg, &stores, state.as_ref(), (counter, output), redactor);
    (run.rules, run.recheck) = (rules, recheck);
    run.each_session(&stores, state.as_ref(), &selection, &mut report)?;
    if dry_run {
        run.dry_run_report(&report);
        return Ok(exit_code(&report, &run.totals, cfg, None));
    }
    let mut closed = run.close(&stores, &mut report, (top, state.as_ref()))?;
    if let (Dest::Dir(dir), Some(m)) = (&plan.dest, &closed.manifest) {
        crate::card::write(dir, m)?;
    }
    let held = closed.dataset.lines.values().sum::<u64>();
    if let (Some(path), Some(mut st)) = (&plan.state, state) {
        let written = closed.written.as_ref();
        st.dataset = closed.dataset.clone();
        commit_state(
            path,
            &mut st,
            (
                std::mem::take(&mut closed.coverage),
                std::mem::take(&mut closed.remembered),
            ),
            written,
            (top, selection, identity),
            rules,
        )?;
        closed.retracted = retract(path, &mut st, &plan.dest, &mut closed.superseded)?;
        crate::state::clear_inflight(path);
    }
    summary::print(&report, &closed, cfg);
    Ok(exit_code(&report, &closed.totals, cfg, Some(held)))
}

/// The run's exit code, after the one warning that names what was
/// dropped (kept under `--quiet`): [`exit::DROPPED`] for a drop under
/// `--fail-on-drop`, else [`exit::PARTIAL`] for unreadable inputs, else
/// [`exit::EMPTY`] when `held` (the lines of the whole output; `None` for a
/// dry run) is 0 under `--fail-on-empty`.
fn exit_code(report: &Report, totals: &Totals, cfg: &ExportConfig, held: Option<u64>) -> u8 {
    if let Some(w) = totals.drops.warning(cfg.max_tokens) {
        report.alert(w);
        if cfg.fail_on_drop {
            return exit::DROPPED;
        }
    }
    if report.partial {
        exit::PARTIAL
    } else if cfg.fail_on_empty && held == Some(0) {
        report.warn(format_args!(
            "the export holds no line (--fail-on-empty): exit {}",
            exit::EMPTY
        ));
        exit::EMPTY
    } else {
        exit::OK
    }
}

/// The state, with a killed `forget` finished and an older version's
/// units migrated (a dry run finishes nothing).
fn load_state(plan: &Plan, dry_run: bool) -> Result<Option<RunState>> {
    let mut state = plan.state.as_deref().map(RunState::load).transpose()?;
    if let (Some(st), Some(path)) = (state.as_mut(), plan.state.as_deref()) {
        let path_of = path_in(&plan.dest);
        if !dry_run {
            crate::state::finish_journal(st, path, &path_of)?;
            // A `forget` killed before its commit left staged files only.
            for name in st.outputs.keys().filter(|n| crate::state::plain_name(n)) {
                let _ = std::fs::remove_file(crate::state::staged_path(&path_of(name)));
            }
        }
        crate::output::migrate_units(st, &path_of)?;
    }
    Ok(state)
}

/// Opens the output; with a state, claims its new files and marks the run
/// under way before a byte is written, so a kill from here on leaves files
/// the next run recognises.
fn open_output(
    cfg: &ExportConfig,
    plan: &Plan,
    state: Option<&mut RunState>,
    identity: &crate::state::OutputIdentity,
) -> Result<Output<'static>> {
    if cfg.curate.dry_run {
        return Ok(Output::discard());
    }
    let interrupted = plan
        .state
        .as_deref()
        .is_some_and(|p| crate::state::inflight_path(p).exists());
    let output = Output::open(
        &plan.dest,
        state.as_deref(),
        cfg.valid_fraction,
        (interrupted, cfg.curate.meta),
    )?;
    if let (Some(st), Some(path)) = (state, plan.state.as_deref()) {
        st.claim(path, &output.file_names(), identity)?;
        if !output.file_names().is_empty() {
            crate::state::mark_inflight(path)?;
        }
    }
    Ok(output)
}

/// The path of an output file (by its name in the state) of `dest`.
fn path_in(dest: &Dest) -> impl Fn(&str) -> std::path::PathBuf + '_ {
    move |name| match dest {
        Dest::Dir(d) => d.join(name),
        Dest::File(p) => p.clone(),
        Dest::Stdout | Dest::Special(_) => std::path::PathBuf::from(name),
    }
}

/// The highest state.db message id this run takes (0 without state.db);
/// no connection reads a row above it.
fn watermark(stores: &mut Stores, state: Option<&RunState>, report: &Report) -> Result<i64> {
    let Some(db) = stores.state.as_mut() else {
        return Ok(0);
    };
    let top = db.max_message_id()?;
    db.read_upto(top);
    if let Some(s) = state
        && top < s.watermark
    {
        report.warn(format_args!(
            "state.db holds messages up to id {top}, but the state file has seen up to {}; was state.db replaced? Only newer ids will be exported",
            s.watermark
        ));
    }
    Ok(top)
}

/// Reads SOUL.md for `--system-prompt soul`; redacts a replacement
/// prompt like any stored text.
fn system_prompt(
    system: &mut SystemPolicy,
    home: &HermesHome,
    redactor: Option<&mut Redactor>,
    report: &Report,
) {
    if let SystemPolicy::Soul(soul) = system {
        let path = home.dir.join("SOUL.md");
        *soul = match crate::safe_io::read_text(&path, crate::safe_io::MAX_PROMPT_BYTES) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                report.warn(format_args!("{}: {e}; read as empty", path.display()));
                None
            }
        };
    }
    if let (Some(r), SystemPolicy::Fixed(text)) = (redactor, system) {
        r.string(text);
    }
}

/// Leftovers of a killed run (the caller holds the lock, so nobody owns
/// them).
fn remove_leftovers(plan: &Plan) {
    let targets: Vec<std::path::PathBuf> = match &plan.dest {
        Dest::File(p) => vec![p.clone()],
        Dest::Dir(d) => DIR_FILES.iter().map(|n| d.join(n)).collect(),
        Dest::Stdout | Dest::Special(_) => Vec::new(),
    };
    for t in targets.iter().chain(&plan.state) {
        crate::sink::remove_stale_partials(t);
    }
}

fn open_stores(
    cfg: &ExportConfig,
    home: &HermesHome,
    state: Option<&RunState>,
    report: &mut Report,
) -> Result<Stores> {
    let mut stores = Stores::open(home, report)?;
    if let Some(st) = state.filter(|s| s.watermark > 0 && stores.state.is_none())
        && !home.state_db().exists()
    {
        // The other stores hold copies of its turns: taking them now would
        // export them twice once it is back.
        return Err(Failure::new(
            exit::PARTIAL,
            format!(
                "{} is missing, but the state file has seen it (up to message id {}); with --state nothing is exported and the state is kept, so the next run with state.db back takes everything new",
                home.state_db().display(),
                st.watermark
            ),
        )
        .into());
    }
    if state.is_some() && stores.state.is_none() && home.state_db().exists() {
        // Exporting the other stores now would commit their copies of the
        // canonical turns, and the next run would export them again.
        return Err(Failure::new(
            exit::PARTIAL,
            format!(
                "{} could not be read (see above); with --state nothing is exported and the state is not advanced, so the next run takes everything",
                home.state_db().display()
            ),
        )
        .into());
    }
    stores.only_ids = cfg.sessions.clone();
    stores.part_rows = cfg.part_rows;
    if let Some(db) = stores.state.as_mut() {
        // A text longer than twice the sample budget can never be trained on.
        db.set_limits(cfg.max_tokens as u64 * 8 + 4096, cfg.include_reasoning);
    }
    Ok(stores)
}

fn open_redactor(
    cfg: &ExportConfig,
    home: &HermesHome,
    report: &mut Report,
) -> Result<Option<Redactor>> {
    if !cfg.redact {
        return Ok(None);
    }
    let r = Redactor::new(Some(&HermesSettings::read(&home.dir)));
    for p in &r.problems {
        report.input_problem(p)?;
    }
    if r.skipped_short > 0 {
        report.warn(format_args!(
            "{} credential setting(s) in .env/config.yaml are shorter than {} characters and are not redacted (they would hit ordinary words)",
            r.skipped_short,
            crate::redact::MIN_SECRET_LEN
        ));
    }
    Ok(Some(r))
}

impl<'a> Run<'a> {
    fn new(
        cfg: &'a ExportConfig,
        stores: &Stores,
        state: Option<&'a RunState>,
        (counter, output): (Counter, Output<'static>),
        redactor: Option<Redactor>,
    ) -> Run<'a> {
        Run {
            cfg,
            kit: Kit {
                opts: cfg.format_options(),
                counter,
                catalog: stores.tool_catalog(),
            },
            covered: Covered {
                watermark: state.map_or(0, |s| s.watermark),
                state,
            },
            totals: Totals::default(),
            coverage: RunCoverage::default(),
            dedupe: Dedupe {
                active: stores.responses.is_some()
                    || !stores.files.snapshots.is_empty()
                    || !stores.files.transcripts.is_empty(),
                ..Dedupe::default()
            },
            output: output.with_units(state.map(|s| &s.units)),
            redactor,
            curate: Curator::new(cfg.curate.clone(), state.map(|s| &s.curation)),
            render_failed: Vec::new(),
            pending_renders: 0,
            superseded: BTreeMap::new(),
            superseded_rows: Vec::new(),
            rules: crate::state::EXPORT_RULES,
            recheck: None,
            rechecked: (0, 0),
            ordinary: None,
        }
    }

    /// Reads, selects and formats every session. The reader, and the sink
    /// (selection, curation, output, coverage) in the order read, run on
    /// this thread; rebuilding, redaction and (with more than one thread)
    /// formatting ahead run on `--threads` workers ([`crate::pool`]).
    fn each_session(
        &mut self,
        stores: &Stores,
        state: Option<&RunState>,
        selection: &str,
        report: &mut Report,
    ) -> Result<()> {
        let cfg = self.cfg;
        // A first incremental run reads everything, streaming like a full
        // one. Later runs read the sessions touched since, and those holding
        // pending turns that this run's filters may now take.
        let db_heads = match (state, &stores.state) {
            (Some(s), Some(db)) if s.watermark > 0 => {
                Some(select::heads_to_read(s, db, cfg, selection)?)
            }
            _ => None,
        };
        // A re-check reads every session; those the filters leave out are
        // pending only when an ordinary night would have read them.
        let (db_heads, touched) = match db_heads {
            Some(h) if self.recheck.is_some() => {
                let ids: std::collections::HashSet<String> = h.into_iter().map(|h| h.id).collect();
                (None, Some(ids))
            }
            h => (h, None),
        };
        self.ordinary.clone_from(&touched);
        let progress_len = match (&db_heads, &stores.state) {
            (Some(h), _) => h.len() as u64,
            (None, Some(db)) => db.session_count(),
            _ => 0,
        };
        report.start_progress(progress_len, "exporting");
        let unselected = RefCell::new(Vec::new());
        let mut excluded: BTreeMap<Skip, usize> = BTreeMap::new();
        let threads = cfg.threads.max(1);
        // A counter per worker, to format ahead with (none inline).
        let workers = if threads > 1 { threads } else { 0 };
        let counters = (0..workers).map(|_| self.kit.counter.fork());
        let counters = std::sync::Mutex::new(counters.collect::<Vec<_>>());
        let template = self.preparer();
        let work = |prep: &mut Preparer<'_>, session| Ok(prep.prepare(session));
        let in_flight = threads * IN_FLIGHT_PER_THREAD;
        let fork = || template.fork(&counters);
        crate::pool::with_pool(threads, in_flight, IN_FLIGHT_BYTES, fork, work, |pool| {
            stores.each_session(
                report,
                db_heads,
                &|h| select::wants(cfg, h),
                &mut |h| {
                    if let Some(flag) = select::excluded_by(cfg, h) {
                        *excluded.entry(Skip::excluded(flag)).or_default() += 1;
                    }
                    if touched.as_ref().is_none_or(|t| t.contains(&h.id)) {
                        unselected.borrow_mut().push(h.id.clone())
                    }
                },
                &mut |session, report| {
                    report.tick();
                    let mut sink = |w| self.take(stores, w, report).map(|()| Flow::Continue);
                    let weight = crate::source::message_bytes(&session);
                    pool.push(session, weight, &mut sink).map(|_| ())
                },
            )?;
            let mut sink = |w| self.take(stores, w, report).map(|()| Flow::Continue);
            pool.finish(&mut sink).map(|_| ())
        })?;
        report.finish_progress();
        for (reason, n) in excluded {
            report.skip_n(reason, n);
        }
        self.coverage.unselected = unselected.into_inner();
        Ok(())
    }

    /// The preparer the workers' are copies of (the redactor's counts
    /// start at 0: each session's are added to the run's as it is taken).
    fn preparer(&self) -> Preparer<'a> {
        let mut redactor = self.redactor.clone();
        if let Some(r) = redactor.as_mut() {
            r.counts.clear();
        }
        Preparer {
            cfg: self.cfg,
            opts: self.kit.opts.clone(),
            catalog: self.kit.catalog.clone(),
            system_json: sft::SystemCache::default(),
            redactor,
            ahead: None,
            covered: Covered {
                watermark: self.covered.watermark,
                state: self.covered.state,
            },
            copies: self.dedupe.active,
            cut: self.curate.forgotten_before,
            rules: self.rules,
            recheck: self.recheck.clone(),
        }
    }

    /// The sink's side of one session, in the order read: another store's
    /// copy is fingerprinted against state.db first; the figures of its
    /// preparation are added; then it is selected and written.
    fn take(&mut self, stores: &Stores, w: Worked, report: &mut Report) -> Result<()> {
        if w.origin != Some(Origin::StateDb) && self.dedupe.active {
            self.dedupe.fingerprint_db_copy(
                stores,
                &w.id,
                self.cfg.strict,
                report,
                self.redactor.as_mut(),
            )?;
        }
        self.totals.add_history(&w.history);
        self.totals.definitions_borrowed += w.borrowed;
        if let Some(r) = self.redactor.as_mut() {
            r.recount(&w.redactions.into_iter().collect::<Vec<_>>());
        }
        match w.prepared {
            Some(p) => self.session(p, w.ahead, report),
            None => {
                report.skip(Skip::HarnessOnlySession);
                Ok(())
            }
        }
    }

    fn session(
        &mut self,
        p: Prepared,
        mut ahead: Option<Ahead>,
        report: &mut Report,
    ) -> Result<()> {
        self.coverage.record_lineage(&self.covered, &p.session);
        self.find_superseded(&p);
        let exchanges = exchanges_of(self.cfg, &p);
        let mut sel = select::turns(
            self.cfg,
            &self.covered,
            &mut self.dedupe,
            &p.session,
            &exchanges,
        );
        report.skip_n(Skip::TurnAlreadyInStateDb, sel.duplicates());
        for ex in exchanges.iter().zip(&sel.selected).filter(|(_, s)| **s) {
            if ex.0.problem == Some(Skip::ToolArgumentsTooDeep) {
                report.warn(format_args!(
                    "session {}: a turn's tool-call arguments are nested deeper than {} levels; the turn is skipped (tool_arguments_too_deep)",
                    p.session.id,
                    crate::content::MAX_ARGUMENTS_DEPTH
                ));
            }
        }
        self.coverage
            .record_session(&self.covered, &p.session, &exchanges, &sel);
        let recheck = (self.rules, self.recheck.as_deref());
        crate::recheck::select(recheck, self.cfg, &p.session, &exchanges, &mut sel);
        // What a render error gives back to pending.
        let consumed = sel.selected.clone();
        // Curation, once coverage is settled (what it drops is consumed,
        // never pending): forgotten sessions and turns, the near-duplicate
        // cap, copies of what the other split holds.
        let keys = match ahead.as_mut() {
            Some(a) => std::mem::take(&mut a.keys),
            None => ExchangeKeys::new(exchanges.len()),
        };
        let kept = self.curate.select(
            &p.session.id,
            p.session.started_at,
            (&exchanges, &keys),
            (&mut sel.selected, &mut sel.copied),
            self.cfg.shape == Shape::Sft,
            report,
        );
        if !kept {
            // Nothing of it is ever exported: nothing stays pending either.
            if self.covered.state.is_some() && p.session.origin == Some(Origin::StateDb) {
                self.coverage.pending.remove(&p.session.id);
                self.coverage.read_db.insert(p.session.id.clone());
            }
            return Ok(());
        }
        self.cross_split(&p, (&exchanges, &keys), &mut sel, report);
        let had = ahead.is_some();
        let ahead = Ahead::take_for(&mut { ahead }, &sel);
        if had {
            crate::stats_env::ahead(ahead.is_some());
        }
        let (over_budget, failed) = match self.cfg.shape {
            Shape::Sft => self.write_sft(&p, (&exchanges, &keys), &sel, ahead, report)?,
            Shape::Dpo | Shape::DpoFlat => self.write_dpo(&p, &sel, ahead, report)?,
        };
        if let Some(e) = failed {
            self.keep_pending(&p, &exchanges, (&consumed, &sel.idents), e, report)?;
        }
        self.totals
            .tokens
            .entry(p.channel.as_str())
            .or_default()
            .over_budget += over_budget;
        Ok(())
    }

    /// Replies of an earlier run (rows at or below the watermark, not looked
    /// at before) that the rebuild now shows rejected (a regeneration, a
    /// rewind) or undone, and not live: their lines are retracted after the
    /// commit. The rebuild decides what is live (so a compaction's clones
    /// are not undos).
    fn find_superseded(&mut self, p: &Prepared) {
        let Some(st) = self.covered.state else {
            return;
        };
        if self.cfg.shape != Shape::Sft || p.session.origin != Some(Origin::StateDb) {
            return;
        }
        if (self.ordinary.as_ref()).is_some_and(|o| !o.contains(&p.session.id)) {
            return;
        }
        let old = |m: &&crate::model::Message| {
            m.role == Role::Assistant
                && m.row_id
                    .is_some_and(|id| id <= st.watermark && !st.superseded_rows.contains(&id))
        };
        let rejected = p
            .rebuilt
            .alternatives
            .iter()
            .flat_map(|a| a.rejected.iter());
        let mut gone: Vec<crate::model::Message> = rejected.filter(old).cloned().collect();
        let undone: Vec<crate::model::Message> =
            p.rebuilt.undone.iter().filter(old).cloned().collect();
        match self.redactor.as_mut() {
            // As the lines hold them; these redactions are not counted.
            Some(r) => {
                let counts = r.counts.clone();
                for mut m in undone {
                    r.message(&mut m);
                    gone.push(m);
                }
                r.counts = counts;
            }
            None => gone.extend(undone),
        }
        self.superseded_rows
            .extend(gone.iter().filter_map(|m| m.row_id));
        let live: std::collections::HashSet<&str> = (p.rebuilt.messages.iter())
            .filter(|m| m.role == Role::Assistant)
            .map(|m| m.content.as_str())
            .collect();
        let texts: std::collections::BTreeSet<String> = (gone.into_iter())
            .map(|m| m.content)
            .filter(|t| !t.trim().is_empty() && !live.contains(t.as_str()))
            .collect();
        if texts.is_empty() {
            return;
        }
        let turns = format::exchanges(&p.rebuilt.messages)
            .iter()
            .filter_map(|ex| {
                let key = crate::state::turn_key(ex.msgs).filter(|k| *k <= st.watermark)?;
                let t = ex.timestamp.or(p.session.started_at);
                Some((ex.msgs.first()?.content.clone(), key, t))
            })
            .collect();
        let sup = crate::cmd::forget::Superseded { texts, turns };
        self.superseded.insert(p.session.id.clone(), sup);
    }

    /// SFT into a directory: an exchange whose normalised copy the other
    /// split already holds is left out (and is never context), so valid
    /// measures what train has not shown.
    fn cross_split(
        &mut self,
        p: &Prepared,
        (exchanges, keys): (&[Exchange<'_>], &ExchangeKeys),
        sel: &mut TurnSelection,
        report: &mut Report,
    ) {
        if self.cfg.shape != Shape::Sft || !self.output.is_dir() {
            return;
        }
        for (i, ex) in exchanges.iter().enumerate() {
            if !sel.selected[i] || ex.problem.is_some() {
                continue;
            }
            let valid = self
                .output
                .is_valid(&meta::unit(&p.session, p.channel, ex.timestamp));
            let key = keys.get(i, ex.msgs);
            if self.curate.dedupe.in_other_split(key, valid) {
                sel.selected[i] = false;
                sel.copied[i] = true;
                report.skip(Skip::CrossSplitCopy);
            }
        }
    }

    /// A sample of `session` failed to render: true when the session stays
    /// pending (with `--state`, unless `--skip-unrenderable`); else its
    /// failed samples are skipped as template_error and, without
    /// `--skip-unrenderable`, the run is partial.
    fn render_failed(&mut self, session: &str, e: String, report: &mut Report) -> bool {
        self.totals.template_error.get_or_insert(e);
        if self.cfg.skip_unrenderable {
            return false;
        }
        if self.covered.state.is_some() {
            return true;
        }
        report.partial = true;
        self.render_failed.push(session.to_string());
        false
    }

    /// A session whose samples the template failed to render: nothing of
    /// it is written, and its turns stay pending (fatal with `--strict`).
    fn keep_pending(
        &mut self,
        p: &Prepared,
        exchanges: &[Exchange<'_>],
        (consumed, idents): (&[bool], &[u64]),
        e: String,
        report: &mut Report,
    ) -> Result<()> {
        if self.cfg.strict {
            return Err(Failure::new(
                exit::ERROR,
                format!(
                    "the chat template failed on a sample of session {}: {e} (--strict)",
                    p.session.id
                ),
            )
            .into());
        }
        report.skip(Skip::TemplateError);
        report.partial = true;
        self.coverage
            .unconsume(&self.covered, &p.session, exchanges, (consumed, idents));
        self.totals.template_error.get_or_insert(e);
        self.render_failed.push(p.session.id.clone());
        self.pending_renders += 1;
        Ok(())
    }

    /// Writes the SFT samples of one session, one unit at a time (context
    /// never crosses a unit); returns how many were over the budget, and
    /// the template's error when a sample failed to render and the session
    /// stays pending.
    fn write_sft(
        &mut self,
        p: &Prepared,
        (exchanges, keys): (&[Exchange<'_>], &ExchangeKeys),
        sel: &TurnSelection,
        ahead: Option<Formatted>,
        report: &mut Report,
    ) -> Result<(usize, Option<String>)> {
        if !sel.any() {
            return Ok((0, None));
        }
        if sel.too_few {
            too_few(exchanges, sel, report);
            return Ok((0, None));
        }
        let units = match ahead {
            Some(Formatted::Sft(units)) => units,
            _ => sft_units(p, exchanges, sel, &self.kit.opts, &mut self.kit.counter),
        };
        let mut reasons = Vec::new();
        let mut lines = Vec::new();
        for (a, unit, outcome) in units {
            if let Some(e) = outcome.template_error
                && self.render_failed(&p.session.id, e, report)
            {
                return Ok((0, self.totals.template_error.clone()));
            }
            reasons.extend(outcome.skipped);
            // `own` is relative to the unit's first exchange.
            lines.extend(outcome.lines.into_iter().map(|l| ((unit.clone(), a), l)));
        }
        let over_budget = skipped(report, &reasons);
        self.totals.drops.note(&p.session.id, &reasons);
        let parts = lines.len();
        for (k, ((unit, first), (line, t, last))) in lines.into_iter().enumerate() {
            let meta = Meta {
                part: (parts > 1).then_some(k + 1),
                ..Meta::of(&p.session, &unit, p.channel, (t, last))
            };
            let json = line.to_json()?;
            let print = crate::curate::dedupe::line_print(&json);
            let Some(bytes) =
                self.curate
                    .emit(json, print, &meta, (t, last), line.count, report)?
            else {
                continue;
            };
            let figures = LineFigures::new(p.channel, None, line.count);
            self.output.line((&p.session.id, &unit), &bytes, figures)?;
            let own = first + line.own.0..first + line.own.1;
            let n = (sel.rechecked.get(own.clone()).into_iter().flatten())
                .filter(|r| **r)
                .count() as u64;
            self.rechecked.0 += u64::from(n > 0);
            self.rechecked.1 += n;
            let own: Vec<(u64, Option<f64>)> = own
                .map(|i| (keys.get(i, exchanges[i].msgs), exchanges[i].timestamp))
                .collect();
            self.wrote_exchanges(&own, &unit, (print, p.session.started_at));
            self.totals.saw_time((t, last));
            let system_tokens = line
                .system
                .as_ref()
                .map_or(0, |s| self.kit.system_tokens(s));
            self.totals
                .wrote(p.channel, line.count, system_tokens, line.missing_tools);
            *self.totals.prompts.entry(line.prompt).or_default() += 1;
        }
        Ok((over_budget, None))
    }

    /// The exchanges of a line of `unit` were written: only what is
    /// written counts toward the near-duplicate cap and as held by its
    /// split; the line's fingerprint `print` keeps their keys and times
    /// (a turn's own, else its session's start; see `Memory::line_keys`).
    fn wrote_exchanges(
        &mut self,
        own: &[(u64, Option<f64>)],
        unit: &str,
        (print, started_at): (u64, Option<f64>),
    ) {
        let (dir, valid) = (self.output.is_dir(), self.output.is_valid(unit));
        let mut keys = Vec::with_capacity(own.len());
        for &(key, time) in own {
            self.curate.dedupe.written(key);
            if dir {
                self.curate.dedupe.wrote_in(key, valid);
            }
            keys.push((key, time.or(started_at)));
        }
        self.curate.dedupe.wrote_line(print, keys);
    }

    /// Writes the preference pairs of one session; returns how many were
    /// over the budget, and the template's error when a pair failed to
    /// render and the session stays pending.
    fn write_dpo(
        &mut self,
        p: &Prepared,
        sel: &TurnSelection,
        ahead: Option<Formatted>,
        report: &mut Report,
    ) -> Result<(usize, Option<String>)> {
        let outcome = match ahead {
            Some(Formatted::Dpo(outcome)) => outcome,
            _ => dpo_pairs(
                p,
                (&sel.selected, self.curate.forgotten_before),
                &self.kit.opts,
                &mut self.kit.counter,
            ),
        };
        if let Some(e) = outcome.template_error
            && self.render_failed(&p.session.id, e, report)
        {
            return Ok((0, self.totals.template_error.clone()));
        }
        let over_budget = skipped(report, &outcome.skipped);
        self.totals.drops.note(&p.session.id, &outcome.skipped);
        for (signal, line, count, missing, (t, last), prompt, user) in outcome.lines {
            let value = serde_json::to_value(&line)?;
            // A pair of a covered turn that the re-check takes: written only
            // when the files do not hold it.
            let rechecked = !sel.rechecked.is_empty() && {
                let msgs = &p.rebuilt.messages[..user];
                let index = msgs.iter().filter(|m| m.role == Role::User).count();
                sel.rechecked.get(index) == Some(&true)
            };
            if rechecked
                && (self.recheck.as_ref()).is_some_and(|h| {
                    h.holds_pair(&p.session.id, &value["chosen"], &value["rejected"])
                })
            {
                continue;
            }
            let key = crate::curate::dedupe::line_key(&value);
            if !self.curate.dedupe.under_cap(key) {
                let turn = crate::state::turn_key(&p.rebuilt.messages[user..]);
                let time = p.rebuilt.messages[user].timestamp;
                (self.curate.dedupe).held_back(key, &p.session.id, (turn, time));
                report.skip(Skip::NearDuplicate);
                continue;
            }
            let unit = meta::unit(&p.session, p.channel, t);
            let valid = self.output.is_valid(&unit);
            if self.output.is_dir() && self.curate.dedupe.in_other_split(key, valid) {
                report.skip(Skip::CrossSplitCopy);
                continue;
            }
            let meta = Meta {
                signal: Some(signal.as_str()),
                ..Meta::of(&p.session, &unit, p.channel, (t, last))
            };
            // Key order is kept (`preserve_order`): the same bytes as the line's.
            let json = serde_json::to_vec(&value)?;
            let print = crate::curate::dedupe::line_print(&json);
            let Some(bytes) = self
                .curate
                .emit(json, print, &meta, (t, last), count, report)?
            else {
                continue;
            };
            self.curate.dedupe.wrote_line(print, vec![(key, t)]);
            if rechecked {
                self.rechecked.0 += 1;
                self.rechecked.1 += 1;
            }
            let figures = LineFigures::new(p.channel, Some(signal), count);
            self.output.line((&p.session.id, &unit), &bytes, figures)?;
            if self.output.is_dir() {
                self.curate.dedupe.wrote_in(key, valid);
            }
            self.totals.saw_time((t, last));
            let system = p
                .systems
                .iter()
                .find(|s| s.0 == prompt)
                .and_then(|s| s.1.as_ref());
            let system_tokens = system.map_or(0, |s| self.kit.system_tokens(s));
            self.totals.wrote(p.channel, count, system_tokens, missing);
            *self.totals.prompts.entry(prompt).or_default() += 1;
            *self.totals.signals.entry(signal.as_str()).or_default() += 1;
        }
        Ok((over_budget, None))
    }

    /// Finishes the outputs (the manifest with them).
    fn close(
        self,
        stores: &Stores,
        report: &mut Report,
        (top, state): (i64, Option<&RunState>),
    ) -> Result<Closed> {
        let Run {
            cfg,
            kit,
            covered,
            totals,
            coverage,
            output,
            redactor,
            curate,
            render_failed,
            pending_renders,
            superseded,
            superseded_rows,
            rules,
            recheck,
            rechecked,
            ..
        } = self;
        let rechecked = recheck.map(|h| crate::manifest::Rechecked {
            rules_before: h.from,
            rules,
            lines: rechecked.0,
            turns: rechecked.1,
        });
        let redactions = redactor.map(|r| r.counts).unwrap_or_default();
        template_warning(report, &totals, (&render_failed, pending_renders > 0));
        let fraction_changed = output.splits.changed_from;
        let counted_with = kit.counter.describe();
        let previous = state.map(|s| s.dataset.clone()).unwrap_or_default();
        let sources = store_entries(stores, report);
        let inputs = Inputs {
            cfg,
            sources: &sources,
            report,
            totals: &totals,
            redactions: &redactions,
            watermark: top.max(covered.watermark),
            counting: Counting {
                counted_with: &counted_with,
                exact: kit.counter.is_exact(),
                template: kit.counter.template(),
            },
            curation: curate.manifest(),
            rechecked,
        };
        // The manifest as written, for the dataset card.
        let manifest = RefCell::new(None);
        let dataset = RefCell::new(None);
        let written = output.finish(&|w| {
            let d = Dataset::after_run(&previous, &inputs, w);
            let m = serde_json::to_value(Manifest::new(&inputs, w, &d))?;
            let bytes = serde_json::to_vec_pretty(&m)?;
            *manifest.borrow_mut() = Some(m);
            *dataset.borrow_mut() = Some(d);
            Ok(bytes)
        })?;
        let dataset = match (dataset.into_inner(), &written) {
            (Some(d), _) => d,
            (None, Some(w)) => Dataset::after_run(&previous, &inputs, w),
            (None, None) => previous,
        };
        Ok(Closed {
            written,
            coverage,
            totals,
            redactions,
            exact: kit.counter.is_exact(),
            manifest: manifest.into_inner(),
            remembered: curate.dedupe.into_update(),
            dataset,
            fraction_changed: fraction_changed.map(|f| (f, cfg.valid_fraction)),
            superseded: (superseded, superseded_rows),
            retracted: 0,
            rechecked,
            dpo: cfg.shape.is_dpo(),
        })
    }

    /// What a dry run makes: its report, on stderr even with `--quiet`
    /// (stdout is for data, and a dry run has none).
    fn dry_run_report(&self, report: &Report) {
        if let Some(e) = &self.totals.template_error {
            report.warn(format_args!(
                "the chat template failed on some samples (skipped as template_error): {e}"
            ));
        }
        let counted = if self.kit.counter.is_exact() {
            "exact"
        } else {
            "estimated"
        };
        eprint!(
            "{}",
            self.curate
                .stats
                .render(self.cfg.shape.as_str(), counted, &report.skipped)
        );
    }
}

impl<'a> Preparer<'a> {
    /// A copy for a worker, with a counter of its own from `counters` to
    /// format ahead with (none left: it does not format ahead).
    fn fork(&self, counters: &std::sync::Mutex<Vec<Counter>>) -> Preparer<'a> {
        let counter = counters.lock().ok().and_then(|mut c| c.pop());
        Preparer {
            cfg: self.cfg,
            opts: self.opts.clone(),
            catalog: self.catalog.clone(),
            system_json: sft::SystemCache::default(),
            redactor: self.redactor.clone(),
            ahead: counter,
            covered: Covered {
                watermark: self.covered.watermark,
                state: self.covered.state,
            },
            copies: self.copies,
            cut: self.cut,
            rules: self.rules,
            recheck: self.recheck.clone(),
        }
    }

    /// Rebuilds one session, redacts it, makes its system messages and tool
    /// definitions, and formats it ahead when it can.
    fn prepare(&mut self, mut session: Session) -> Worked {
        let mut worked = Worked {
            id: session.id.clone(),
            origin: session.origin,
            prepared: None,
            history: Default::default(),
            borrowed: 0,
            redactions: BTreeMap::new(),
            ahead: None,
        };
        let channel = select::channel_of(self.cfg, &session.meta);
        let mut rebuilt = rebuild::rebuild(&session);
        worked.history = rebuilt.stats.clone();
        if quality::harness_only(&rebuilt) {
            return worked;
        }
        let mut redactor = self.redactor.as_mut();
        if let Some(r) = redactor.as_deref_mut() {
            // Every string once, before any sample repeats it.
            rebuilt.messages.iter_mut().for_each(|m| r.message(m));
            for alt in &mut rebuilt.alternatives {
                alt.rejected.iter_mut().for_each(|m| r.message(m));
            }
        }
        let systems = system_chain(&session, &self.cfg.system)
            .into_iter()
            .map(|(name, text)| {
                let msg = text.map(|t| self.system_json.get(&t, redactor.as_deref_mut()));
                (name, msg)
            })
            .collect();
        let tools = if self.opts.tools == ToolsPolicy::None {
            SessionTools::default()
        } else {
            let called = called_names(&rebuilt.messages);
            let catalog = &mut self.catalog;
            // The definitions move into the sample tools (redacted there, once).
            let offered = session.tools.take();
            let mut t = SessionTools::new(&session.id, offered, &called, &mut |n| catalog.get(n));
            worked.borrowed = t.borrowed.len();
            if let Some(r) = redactor {
                t.offered
                    .iter_mut()
                    .chain(&mut t.borrowed)
                    .for_each(|v| r.value(v));
            }
            t
        };
        if let Some(r) = self.redactor.as_mut() {
            worked.redactions = std::mem::take(&mut r.counts);
        }
        let p = Prepared {
            session,
            channel,
            rebuilt,
            systems,
            tools,
        };
        worked.ahead = self.format_ahead(&p);
        worked.prepared = Some(p);
        worked
    }

    /// The session's samples, for the selection the sink makes when
    /// curation leaves it as it is (see [`Ahead`]); `None` without a
    /// counter, or when the sink writes no sample of it anyway.
    fn format_ahead(&mut self, p: &Prepared) -> Option<Ahead> {
        if self.copies && p.session.origin != Some(Origin::StateDb) {
            return None;
        }
        let counter = self.ahead.as_mut()?;
        let exchanges = exchanges_of(self.cfg, p);
        let mut inactive = Dedupe::default();
        let mut sel = select::turns(
            self.cfg,
            &self.covered,
            &mut inactive,
            &p.session,
            &exchanges,
        );
        // As the sink selects (see `Run::session`).
        let recheck = (self.rules, self.recheck.as_deref());
        crate::recheck::select(recheck, self.cfg, &p.session, &exchanges, &mut sel);
        let keys = ExchangeKeys::new(exchanges.len());
        let formatted = match self.cfg.shape {
            Shape::Sft if !sel.any() || sel.too_few => return None,
            Shape::Sft => {
                // What curation and the written lines ask for (see `Run::session`).
                for (i, ex) in exchanges
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| sel.selected[*i])
                {
                    keys.get(i, ex.msgs);
                }
                Formatted::Sft(sft_units(p, &exchanges, &sel, &self.opts, counter))
            }
            Shape::Dpo | Shape::DpoFlat => {
                Formatted::Dpo(dpo_pairs(p, (&sel.selected, self.cut), &self.opts, counter))
            }
        };
        Some(Ahead {
            selected: sel.selected,
            copied: sel.copied,
            formatted,
            keys,
        })
    }
}

/// The exchanges of a prepared session as selection sees them: a turn
/// whose failed call was taken out for a retry pair, and (SFT) too short
/// a reply, marked.
fn exchanges_of<'p>(cfg: &ExportConfig, p: &'p Prepared) -> Vec<Exchange<'p>> {
    let mut exchanges = format::exchanges(&p.rebuilt.messages);
    mark_retried(&p.rebuilt, &mut exchanges);
    if cfg.shape == Shape::Sft {
        quality::mark_short_replies(&mut exchanges, cfg.curate.min_reply_chars);
    }
    exchanges
}

/// The SFT samples of each unit of `p` with a selected exchange, one unit
/// at a time (context never crosses a unit): its first exchange, its name
/// and what the formatter made.
fn sft_units(
    p: &Prepared,
    exchanges: &[Exchange<'_>],
    sel: &TurnSelection,
    opts: &FormatOptions,
    counter: &mut Counter,
) -> Vec<(usize, String, sft::SftOutcome)> {
    let mut out = Vec::new();
    for (a, b, unit) in unit_ranges(p, exchanges) {
        if !sel.selected[a..b].iter().any(|s| *s) {
            continue;
        }
        let mut fitter = Fitter::new(counter, opts.max_tokens);
        let outcome = sft::samples(
            &exchanges[a..b],
            &sel.selected[a..b],
            &sel.copied[a..b],
            opts,
            &p.systems,
            &p.tools,
            &mut fitter,
        );
        out.push((a, unit, outcome));
    }
    out
}

/// The preference pairs of `p` whose exchange is `selected`.
fn dpo_pairs(
    p: &Prepared,
    (selected, cut): (&[bool], Option<f64>),
    opts: &FormatOptions,
    counter: &mut Counter,
) -> dpo::DpoOutcome {
    let mut fitter = Fitter::new(counter, opts.max_tokens);
    let msgs = &p.rebuilt.messages;
    // The pair's prompt ends with its exchange's user turn.
    let selected_pair = |user: usize, _chosen_end: usize| -> bool {
        let index = msgs[..user].iter().filter(|m| m.role == Role::User).count();
        selected.get(index).copied().unwrap_or(false)
    };
    let before_cut = |t: Option<f64>| crate::curate::before(cut, t);
    let unit_start = |user: usize| unit_start(p, user, &before_cut);
    let systems: Vec<(&'static str, Option<&str>)> = p
        .systems
        .iter()
        .map(|(name, s)| (*name, s.as_ref().map(|s| s.text.as_str())))
        .collect();
    dpo::pairs(
        &p.rebuilt,
        opts,
        &systems,
        &p.tools,
        &mut fitter,
        (&selected_pair, &unit_start),
    )
}

/// Superseded replies per session, and the rows looked at.
type Found = (BTreeMap<String, crate::cmd::forget::Superseded>, Vec<i64>);

/// What a run leaves once its outputs are finished.
struct Closed {
    written: Option<Written>,
    coverage: RunCoverage,
    totals: Totals,
    redactions: BTreeMap<&'static str, usize>,
    exact: bool,
    /// The manifest written (directory output), for the dataset card.
    manifest: Option<serde_json::Value>,
    /// What the run adds to the state's curation memory.
    remembered: crate::curate::dedupe::Update,
    /// What the cumulative output holds after this run.
    dataset: Dataset,
    /// `--valid-fraction` changed (from, to): new units only.
    fraction_changed: Option<(f64, f64)>,
    /// Superseded replies found, and the rows looked at.
    superseded: Found,
    /// Lines retracted after the commit.
    retracted: u64,
    /// What the one-time re-check of covered turns added (see `recheck`).
    rechecked: Option<crate::manifest::Rechecked>,
    dpo: bool,
}

/// One warning for the chat template's failures, naming the first
/// session: pending ones say how to give them up for good.
fn template_warning(report: &Report, totals: &Totals, (failed, pending): (&[String], bool)) {
    let Some(e) = &totals.template_error else {
        return;
    };
    let first = failed
        .first()
        .map(|s| format!(" (first: session {s})"))
        .unwrap_or_default();
    if pending {
        report.warn(format_args!(
            "the chat template failed to render the samples of {} session(s){first}: {e}. Nothing of them was written and their turns stay pending: every run retries them (a fixed template or tokenizer renders them); --skip-unrenderable gives them up for good (counted as template_error)",
            failed.len()
        ));
    } else if failed.is_empty() {
        report.warn(format_args!(
            "the chat template failed on some samples, given up with --skip-unrenderable (skipped as template_error): {e}"
        ));
    } else {
        report.warn(format_args!(
            "the chat template failed on samples of {} session(s){first} (skipped as template_error; the others were written): {e}",
            failed.len()
        ));
    }
}

/// The exchanges of each unit of a session, as ranges with the unit: the
/// whole session, or for a nexus session one range per UTC day.
fn unit_ranges(p: &Prepared, exchanges: &[Exchange<'_>]) -> Vec<(usize, usize, String)> {
    let mut out: Vec<(usize, usize, String)> = Vec::new();
    for (i, ex) in exchanges.iter().enumerate() {
        let unit = meta::unit(&p.session, p.channel, ex.timestamp);
        match out.last_mut() {
            Some(r) if r.2 == unit => r.1 = i + 1,
            _ => out.push((i, i + 1, unit)),
        }
    }
    out
}

/// A session with fewer complete turns than `--min-turns`: says why each
/// selected turn could not count, and why the session is skipped.
fn too_few(exchanges: &[Exchange<'_>], sel: &TurnSelection, report: &mut Report) {
    for ex in exchanges.iter().zip(&sel.selected).filter(|(_, s)| **s) {
        if let Some(problem) = ex.0.problem {
            report.skip(problem);
        }
    }
    report.skip(if sel.complete == 0 {
        Skip::NoCompleteTurn
    } else {
        Skip::TooFewTurns
    });
}

/// The first user turn of the unit of the user turn `messages[user]` of
/// `p` after the last one `before_cut` (the `forget --before` cut-off): a
/// pair's prompt history starts there, so it never carries a turn from
/// before the cut.
fn unit_start(p: &Prepared, user: usize, before_cut: &dyn Fn(Option<f64>) -> bool) -> usize {
    let msgs = &p.rebuilt.messages;
    let unit_at = |i: usize| meta::unit(&p.session, p.channel, msgs[i].timestamp);
    let unit = unit_at(user);
    (0..user)
        .rev()
        .filter(|&i| msgs[i].role == Role::User)
        .take_while(|&i| {
            unit_at(i) == unit && !before_cut(msgs[i].timestamp.or(p.session.started_at))
        })
        .last()
        .unwrap_or(user)
}

/// The turn whose failed call was taken out for a tool-retry pair would
/// teach a reply that may speak of the removed call: not SFT data.
fn mark_retried(rebuilt: &Rebuilt, exchanges: &mut [Exchange<'_>]) {
    for alt in &rebuilt.alternatives {
        if alt.signal == Signal::ToolRetry {
            let k = rebuilt.messages[..alt.prompt_end]
                .iter()
                .filter(|m| m.role == Role::User)
                .count();
            if let Some(ex) = k.checked_sub(1).and_then(|k| exchanges.get_mut(k)) {
                ex.problem = ex.problem.or(Some(Skip::RetriedToolCall));
            }
        }
    }
}

/// Counts what a formatter skipped; returns how many were over the budget.
fn skipped(report: &mut Report, reasons: &[Skip]) -> usize {
    for reason in reasons {
        report.skip(*reason);
    }
    reasons.iter().filter(|r| **r == Skip::OverBudget).count()
}

/// After the commit: retracts the lines whose reply was superseded (see
/// `forget::retract`), and remembers the rows looked at.
fn retract(
    path: &std::path::Path,
    st: &mut RunState,
    dest: &Dest,
    (found, rows): &mut Found,
) -> Result<u64> {
    if rows.is_empty() || matches!(dest, Dest::Stdout | Dest::Special(_)) {
        return Ok(0);
    }
    st.superseded_rows.extend(rows.drain(..));
    if found.is_empty() {
        st.save(path)?;
        return Ok(0);
    }
    let dir = match dest {
        Dest::Dir(d) => Some(d.as_path()),
        _ => None,
    };
    crate::cmd::forget::retract(st, path, (&path_in(dest), dir), found)
}

/// Saves the state once every line was delivered.
fn commit_state(
    path: &std::path::Path,
    st: &mut RunState,
    (coverage, remembered): (RunCoverage, crate::curate::dedupe::Update),
    written: Option<&Written>,
    (top, selection, identity): (i64, String, crate::state::OutputIdentity),
    rules: u32,
) -> Result<()> {
    // The rules are raised in the commit that records the lines a re-check
    // wrote: a killed re-check is done again by the next run.
    let rules_changed = st.rules != rules;
    st.rules = rules;
    if written.is_some_and(|w| !w.delivered) {
        return Err(Failure::new(
            exit::ERROR,
            "the reader closed the output before every line was delivered; the state file was not advanced, so the next run sends these lines again",
        )
        .into());
    }
    remembered.apply(&mut st.curation);
    if coverage.commit(st, written, top, selection, identity) {
        crate::stall::point("before-state");
        st.save(path)?;
    } else if rules_changed {
        st.save(path)?;
    }
    Ok(())
}

/// The manifest's `sources`: each store with what it contributed.
fn store_entries(stores: &Stores, report: &Report) -> Vec<SourceEntry> {
    let read = |o: Origin| report.sessions_read.get(o.as_str()).copied().unwrap_or(0);
    let enriched = |store: &str| report.sessions_enriched.get(store).copied().unwrap_or(0);
    let mut out = Vec::new();
    if let Some(db) = &stores.state {
        out.push(SourceEntry {
            store: "state.db",
            path: tilde(&db.path.display().to_string()),
            schema_version: db.schema_version,
            schema_note: db.schema_note(),
            sessions_read: read(Origin::StateDb),
            sessions_enriched: 0,
        });
    }
    if let Some(rs) = &stores.responses {
        out.push(SourceEntry {
            store: "response_store.db",
            path: tilde(&rs.path.display().to_string()),
            schema_version: None,
            schema_note: None,
            sessions_read: read(Origin::ResponseStore),
            sessions_enriched: enriched("response_store.db"),
        });
    }
    out.push(SourceEntry {
        store: "sessions",
        path: tilde(&stores.files.dir.display().to_string()),
        schema_version: None,
        schema_note: None,
        sessions_read: read(Origin::SessionJson) + read(Origin::Transcript),
        sessions_enriched: enriched("sessions"),
    });
    out
}
