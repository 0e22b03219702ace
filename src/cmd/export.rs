//! The `export` pipeline: stores → sessions → rebuilt conversations →
//! selection ([`crate::select`]) → formatter → redaction → output, with a
//! one-line summary on stderr and, for directory output, a manifest
//! ([`crate::manifest`]). With `--state`, what the run covered is folded
//! into the state file ([`crate::state`]) after the outputs are in place.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use anyhow::Result;

use crate::config::{ExportConfig, SystemPolicy};
use crate::coverage;
use crate::curate::meta::Meta;
use crate::curate::{Curator, quality};
use crate::exit::{self, Failure};
use crate::format::fit::Fitter;
use crate::format::tools::{SessionTools, ToolsPolicy, called_names};
use crate::format::{self, Exchange, FormatOptions, dpo, sft, system_text};
use crate::hermes_settings::HermesSettings;
use crate::home::HermesHome;
use crate::manifest::{Counting, Inputs, Manifest, Totals};
use crate::model::{Channel, Origin, Role, Session};
use crate::output::{Output, Written};
use crate::paths::{DIR_FILES, Dest, Plan};
use crate::rebuild::{self, Rebuilt, Signal};
use crate::redact::Redactor;
use crate::report::{Report, counts};
use crate::select::{self, Covered, Dedupe, TurnSelection};
use crate::shape::Shape;
use crate::skip::Skip;
use crate::source::Stores;
use crate::source::session_files::ToolCatalog;
use crate::state::{RunCoverage, RunState};
use crate::tokens::{Counter, Estimate, Sample};

/// What formatting a session needs besides the session.
struct Kit {
    opts: FormatOptions,
    counter: Counter,
    catalog: ToolCatalog,
    /// System messages already made, shared by the sessions that use them.
    system_json: sft::SystemCache,
}

impl Kit {
    /// Tokens the system prompt alone costs a sample (counted once per
    /// distinct prompt: the cached message keeps them).
    fn system_tokens(&mut self, system: &sft::SystemMsg) -> usize {
        if let Some(n) = system.tokens.get() {
            return n;
        }
        let text = system.text.as_str();
        let n = match &self.counter {
            Counter::Estimate => Estimate::system(text),
            Counter::Exact(_) => self
                .counter
                .count(&Sample {
                    system: Some(text),
                    messages: &[],
                    tools: None,
                })
                .map_or_else(|_| Estimate::system(text), |c| c.total),
        };
        system.tokens.set(Some(n));
        n
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
    output: Output,
    redactor: Option<Redactor>,
    /// Provenance, duplicates, quality rules, dry-run figures.
    curate: Curator,
}

/// A rebuilt session ready to format.
struct Prepared {
    session: Session,
    channel: Channel,
    rebuilt: Rebuilt,
    system: Option<Rc<sft::SystemMsg>>,
    tools: SessionTools,
}

pub fn run(mut cfg: ExportConfig) -> Result<u8> {
    let home = cfg.home.resolve()?;
    let mut report = Report::new(cfg.strict, cfg.quiet);
    // Every path this run writes, resolved and checked first.
    let plan = crate::paths::plan(
        &cfg.out,
        cfg.state.as_deref(),
        &home,
        cfg.system_file.as_deref(),
    )?;
    // One run at a time per state file (or per output). A dry run writes
    // nothing, not even a lock or a cleanup.
    let dry_run = cfg.curate.dry_run;
    crate::source::sqlite::create_no_side_files(dry_run);
    let _lock = if dry_run { None } else { plan.take_lock()? };
    if !dry_run {
        remove_leftovers(&plan);
    }
    let state = plan.state.as_deref().map(RunState::load).transpose()?;
    // A cumulative output belongs to one state, format and style.
    let identity = coverage::identity(&cfg, &plan);
    coverage::check_output(state.as_ref(), &plan, &identity)?;
    let mut stores = open_stores(&cfg, &home, state.is_some(), &mut report)?;
    let mut redactor = open_redactor(&cfg, &home, &mut report)?;
    let top = watermark(&mut stores, state.as_ref(), &report)?;
    let stores = stores;
    let selection = coverage::selection(&cfg);
    system_prompt(&mut cfg.system, &home, redactor.as_mut(), &report);
    let cfg = &cfg;
    let counter = Counter::new(cfg.tokenizer.as_deref())?;
    let output = if dry_run {
        Output::discard()
    } else {
        Output::open(&plan.dest, state.as_ref(), cfg.valid_fraction)?
    };
    let mut run = Run::new(cfg, &stores, state.as_ref(), (counter, output), redactor);
    run.each_session(&stores, state.as_ref(), &selection, &mut report)?;
    if dry_run {
        run.dry_run_report(&report);
        return Ok(if report.partial {
            exit::PARTIAL
        } else {
            exit::OK
        });
    }
    let closed = run.close(&stores, &mut report, top)?;
    if let (Dest::Dir(dir), Some(m)) = (&plan.dest, &closed.manifest) {
        crate::card::write(dir, m)?;
    }
    if let (Some(path), Some(mut st)) = (&plan.state, state) {
        let written = closed.written.as_ref();
        commit_state(
            path,
            &mut st,
            (closed.coverage, &closed.curate),
            written,
            (top, selection, identity),
        )?;
    }
    summarize(
        &report,
        &closed.totals,
        cfg,
        &closed.redactions,
        closed.written.is_none(),
        closed.exact,
    );
    Ok(if report.partial {
        exit::PARTIAL
    } else {
        exit::OK
    })
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
    incremental: bool,
    report: &mut Report,
) -> Result<Stores> {
    let mut stores = Stores::open(home, report)?;
    if incremental && stores.state.is_none() && home.state_db().exists() {
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
        (counter, output): (Counter, Output),
        redactor: Option<Redactor>,
    ) -> Run<'a> {
        Run {
            cfg,
            kit: Kit {
                opts: cfg.format_options(),
                counter,
                catalog: ToolCatalog::new(&stores.files),
                system_json: sft::SystemCache::default(),
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
            output,
            redactor,
            curate: Curator::new(cfg.curate.clone(), state.map(|s| &s.curation)),
        }
    }

    /// Reads, selects and formats every session.
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
                Some(coverage::heads_to_read(s, db, cfg, selection)?)
            }
            _ => None,
        };
        let progress_len = match (&db_heads, &stores.state) {
            (Some(h), _) => h.len() as u64,
            (None, Some(db)) => db.session_count(),
            _ => 0,
        };
        report.start_progress(progress_len, "exporting");
        let unselected = RefCell::new(Vec::new());
        stores.each_session(
            report,
            db_heads,
            &|h| select::wants(cfg, h),
            &mut |h| unselected.borrow_mut().push(h.id.clone()),
            &mut |session, report| {
                report.tick();
                if session.origin != Some(Origin::StateDb) && self.dedupe.active {
                    self.dedupe.fingerprint_db_copy(
                        stores,
                        &session.id,
                        cfg.strict,
                        report,
                        self.redactor.as_mut(),
                    )?;
                }
                self.session(session, report)
            },
        )?;
        report.finish_progress();
        self.coverage.unselected = unselected.into_inner();
        Ok(())
    }

    /// Rebuilds one session, redacts it, and makes its system message and
    /// tool definitions.
    /// `None` for a session of harness traffic only (counted).
    fn prepare(&mut self, mut session: Session, report: &mut Report) -> Option<Prepared> {
        let channel = select::channel_of(self.cfg, &session.meta);
        let mut rebuilt = rebuild::rebuild(&session);
        self.totals.add_history(&rebuilt.stats);
        if quality::harness_only(&rebuilt) {
            report.skip(Skip::HarnessOnlySession);
            return None;
        }
        let mut redactor = self.redactor.as_mut();
        if let Some(r) = redactor.as_deref_mut() {
            // Every string once, before any sample repeats it.
            rebuilt.messages.iter_mut().for_each(|m| r.message(m));
            for alt in &mut rebuilt.alternatives {
                alt.rejected.iter_mut().for_each(|m| r.message(m));
            }
        }
        let system = system_text(&session, &self.cfg.system)
            .map(|text| self.kit.system_json.get(&text, redactor.as_deref_mut()));
        let tools = if self.kit.opts.tools == ToolsPolicy::None {
            SessionTools::default()
        } else {
            let called = called_names(&rebuilt.messages);
            let catalog = &mut self.kit.catalog;
            // The definitions move into the sample tools (redacted there, once).
            let offered = session.tools.take();
            let mut t = SessionTools::new(&session.id, offered, &called, &mut |n| catalog.get(n));
            if let Some(r) = redactor {
                t.offered
                    .iter_mut()
                    .chain(&mut t.borrowed)
                    .for_each(|v| r.value(v));
            }
            t
        };
        Some(Prepared {
            session,
            channel,
            rebuilt,
            system,
            tools,
        })
    }

    fn session(&mut self, session: Session, report: &mut Report) -> Result<()> {
        let Some(p) = self.prepare(session, report) else {
            return Ok(());
        };
        let mut exchanges = format::exchanges(&p.rebuilt.messages);
        mark_retried(&p.rebuilt, &mut exchanges);
        if self.cfg.shape == Shape::Sft {
            quality::mark_short_replies(&mut exchanges, self.cfg.curate.min_reply_chars);
        }
        let mut sel = select::turns(
            self.cfg,
            &self.covered,
            &mut self.dedupe,
            &p.session,
            &exchanges,
        );
        report.skip_n(Skip::TurnAlreadyInStateDb, sel.duplicates);
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
        // Curation, once coverage is settled (what it drops is consumed,
        // never pending): forgotten sessions and turns, the near-duplicate
        // cap.
        let kept = self.curate.select(
            &p.session.id,
            p.session.started_at,
            &exchanges,
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
        let over_budget = match self.cfg.shape {
            Shape::Sft => self.write_sft(&p, &exchanges, &sel, report)?,
            Shape::Dpo | Shape::DpoFlat => self.write_dpo(&p, &sel, report)?,
        };
        self.totals
            .tokens
            .entry(p.channel.as_str())
            .or_default()
            .over_budget += over_budget;
        Ok(())
    }

    /// Writes the SFT samples of one session; returns how many were over
    /// the budget.
    fn write_sft(
        &mut self,
        p: &Prepared,
        exchanges: &[Exchange<'_>],
        sel: &TurnSelection,
        report: &mut Report,
    ) -> Result<usize> {
        if !sel.any() {
            return Ok(0);
        }
        if sel.too_few {
            // Say why each turn could not count.
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
            return Ok(0);
        }
        let system_tokens = p.system.as_ref().map_or(0, |s| self.kit.system_tokens(s));
        let mut fitter = Fitter::new(&mut self.kit.counter, self.kit.opts.max_tokens);
        let outcome = sft::samples(
            exchanges,
            &sel.selected,
            &sel.copied,
            &self.kit.opts,
            p.system.clone(),
            &p.tools,
            &mut fitter,
        );
        let over_budget = skipped(report, &outcome.skipped);
        if let Some(e) = outcome.template_error {
            self.totals.template_error.get_or_insert(e);
        }
        let parts = outcome.lines.len();
        for (k, (line, t, last)) in outcome.lines.into_iter().enumerate() {
            let meta = Meta {
                part: (parts > 1).then_some(k + 1),
                ..Meta::of(&p.session, p.channel, (t, last))
            };
            let json = line.to_json()?;
            let Some(bytes) = self
                .curate
                .emit(json, &meta, (t, last), line.count, report)?
            else {
                continue;
            };
            self.output.line(&p.session.id, &bytes)?;
            self.totals.saw_time(t);
            self.totals
                .wrote(p.channel, line.count, system_tokens, line.missing_tools);
        }
        Ok(over_budget)
    }

    /// Writes the preference pairs of one session; returns how many were
    /// over the budget.
    fn write_dpo(
        &mut self,
        p: &Prepared,
        sel: &TurnSelection,
        report: &mut Report,
    ) -> Result<usize> {
        let system_tokens = p.system.as_ref().map_or(0, |s| self.kit.system_tokens(s));
        let mut fitter = Fitter::new(&mut self.kit.counter, self.kit.opts.max_tokens);
        let msgs = &p.rebuilt.messages;
        // The pair's prompt ends with its exchange's user turn.
        let selected_pair = |user: usize, _chosen_end: usize| -> bool {
            let index = msgs[..user].iter().filter(|m| m.role == Role::User).count();
            sel.selected.get(index).copied().unwrap_or(false)
        };
        let outcome = dpo::pairs(
            &p.rebuilt,
            &self.kit.opts,
            p.system.as_ref().map(|s| s.text.as_str()),
            &p.tools,
            &mut fitter,
            &selected_pair,
        );
        let over_budget = skipped(report, &outcome.skipped);
        if let Some(e) = outcome.template_error {
            self.totals.template_error.get_or_insert(e);
        }
        for (signal, line, count, missing, (t, last)) in outcome.lines {
            let value = serde_json::to_value(&line)?;
            if !self
                .curate
                .dedupe
                .under_cap(crate::curate::dedupe::line_key(&value))
            {
                report.skip(Skip::NearDuplicate);
                continue;
            }
            let meta = Meta {
                signal: Some(signal.as_str()),
                ..Meta::of(&p.session, p.channel, (t, last))
            };
            // Key order is kept (`preserve_order`): the same bytes as the line's.
            let json = serde_json::to_vec(&value)?;
            let Some(bytes) = self.curate.emit(json, &meta, (t, last), count, report)? else {
                continue;
            };
            self.output.line(&p.session.id, &bytes)?;
            self.totals.saw_time(t);
            self.totals.wrote(p.channel, count, system_tokens, missing);
            *self.totals.signals.entry(signal.as_str()).or_default() += 1;
        }
        Ok(over_budget)
    }

    /// Finishes the outputs (the manifest with them).
    fn close(self, stores: &Stores, report: &mut Report, top: i64) -> Result<Closed> {
        let Run {
            cfg,
            kit,
            covered,
            totals,
            coverage,
            output,
            redactor,
            curate,
            ..
        } = self;
        let redactions = redactor.map(|r| r.counts).unwrap_or_default();
        if let Some(e) = &totals.template_error {
            report.warn(format_args!(
                "the chat template failed on some samples (skipped as template_error): {e}"
            ));
        }
        let counted_with = kit.counter.describe();
        let inputs = Inputs {
            cfg,
            stores,
            report,
            totals: &totals,
            redactions: &redactions,
            watermark: top.max(covered.watermark),
            counting: Counting {
                counted_with: &counted_with,
                exact: kit.counter.is_exact(),
            },
            curation: curate.manifest(),
        };
        // The manifest as written, for the dataset card.
        let manifest = RefCell::new(None);
        let written = output.finish(&|w| {
            let m = serde_json::to_value(Manifest::new(&inputs, w))?;
            let bytes = serde_json::to_vec_pretty(&m)?;
            *manifest.borrow_mut() = Some(m);
            Ok(bytes)
        })?;
        Ok(Closed {
            written,
            coverage,
            totals,
            redactions,
            exact: kit.counter.is_exact(),
            manifest: manifest.into_inner(),
            curate,
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

/// What a run leaves once its outputs are finished.
struct Closed {
    written: Option<Written>,
    coverage: RunCoverage,
    totals: Totals,
    redactions: BTreeMap<&'static str, usize>,
    exact: bool,
    /// The manifest written (directory output), for the dataset card.
    manifest: Option<serde_json::Value>,
    curate: Curator,
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

/// Saves the state once every line was delivered.
fn commit_state(
    path: &std::path::Path,
    st: &mut RunState,
    (coverage, curate): (RunCoverage, &Curator),
    written: Option<&Written>,
    (top, selection, identity): (i64, String, crate::state::OutputIdentity),
) -> Result<()> {
    if written.is_some_and(|w| !w.delivered) {
        return Err(Failure::new(
            exit::ERROR,
            "the reader closed the output before every line was delivered; the state file was not advanced, so the next run sends these lines again",
        )
        .into());
    }
    curate.remember(&mut st.curation);
    if coverage.commit(st, written, top, selection, identity) {
        crate::stall::point("before-state");
        st.save(path)?;
    }
    Ok(())
}

fn summarize(
    report: &Report,
    totals: &Totals,
    cfg: &ExportConfig,
    redactions: &BTreeMap<&'static str, usize>,
    nothing_new: bool,
    exact: bool,
) {
    let written: usize = totals.samples.values().sum();
    let h = &totals.history;
    if nothing_new {
        report.info(format_args!(
            "nothing new since the last run; outputs left as they were (read {} sessions)",
            report.sessions_read.values().sum::<usize>()
        ));
        return;
    }
    let signals = if cfg.shape.is_dpo() {
        format!("; pairs per signal: {}", counts(&totals.per_signal(cfg)))
    } else {
        String::new()
    };
    let tokens = token_summary(totals);
    report.info(format_args!(
        "read {} sessions ({}); wrote {written} {} lines ({}){signals}; tokens ({} of at most {} each): {}; skipped: {}; redacted: {}; history: {} summaries and {} compaction copies dropped, {} undone rows left out",
        report.sessions_read.values().sum::<usize>(),
        counts(&report.sessions_read),
        if cfg.shape.is_dpo() { "dpo" } else { "sft" },
        counts(&totals.per_channel(cfg)),
        if exact { "exact" } else { "estimated" },
        cfg.max_tokens,
        tokens,
        counts(&report.skipped),
        if cfg.redact { counts(redactions) } else { "off".to_string() },
        h.summaries,
        h.compaction_copies,
        h.undone_rows,
    ));
}

/// Token figures per channel that wrote or dropped samples, for the summary.
fn token_summary(totals: &Totals) -> String {
    let tokens: Vec<String> = Channel::ALL
        .iter()
        .filter_map(|c| {
            let t = totals.tokens.get(c.as_str())?;
            (t.samples > 0 || t.over_budget > 0).then(|| {
                let missing = if t.tool_definitions_missing > 0 {
                    format!(
                        "; {} without a called tool's definition",
                        t.tool_definitions_missing
                    )
                } else {
                    String::new()
                };
                let share = if t.total == 0 {
                    0.0
                } else {
                    100.0 * t.trainable as f64 / t.total as f64
                };
                format!(
                    "{} {} (trainable {}, {share:.0}%; longest {}; over budget {}{missing})",
                    c.as_str(),
                    t.total,
                    t.trainable,
                    t.longest,
                    t.over_budget,
                )
            })
        })
        .collect();
    if tokens.is_empty() {
        "none".to_string()
    } else {
        tokens.join(", ")
    }
}
