//! The `export` pipeline: stores → sessions → rebuilt conversations →
//! selection → formatter → redaction → output, with a one-line summary on
//! stderr and, for directory output, a manifest.

use std::collections::{BTreeMap, HashSet};

use anyhow::Result;
use serde_json::{Value, json};

use crate::cli::ExportArgs;
use crate::config::{ExportConfig, Format, SystemPolicy, iso_time};
use crate::coverage::{self, RunCoverage, fingerprint, identities};
use crate::exit::{self, Failure};
use crate::format::fit::Fitter;
use crate::format::tools::{SessionTools, ToolsPolicy, called_names};
use crate::format::{self, Exchange, FormatOptions, dpo, sft, system_text};
use crate::home::HermesHome;
use crate::model::{Channel, Message, Origin, Role, Session};
use crate::output::Output;
use crate::paths::{DIR_FILES, Dest};
use crate::rebuild::{self, RebuildStats};
use crate::redact::Redactor;
use crate::report::{Report, counts};
use crate::source::session_files::ToolCatalog;
use crate::source::{Stores, head_of};
use crate::state::{Pending, RunLock, RunState};
use crate::tokens::{Count, Counter, Estimate, Sample};

/// Token figures of one channel.
#[derive(Debug, Default, Clone, Copy)]
struct TokenTotals {
    samples: usize,
    total: usize,
    trainable: usize,
    longest: usize,
    system: usize,
    over_budget: usize,
    tool_definitions_missing: usize,
}

/// Totals for the summary and the manifest.
#[derive(Debug, Default)]
struct Totals {
    samples: BTreeMap<&'static str, usize>,
    signals: BTreeMap<&'static str, usize>,
    history: RebuildStats,
    first: Option<f64>,
    last: Option<f64>,
    /// What this run covered and left pending, for the state.
    coverage: RunCoverage,
    /// Fingerprints of the turns of the state.db sessions read in this run.
    /// Session files can hold the same turns under another id (0.13 writes
    /// snapshots for compaction and retry sessions that never reach the
    /// DB); those turns are exported once.
    seen: HashSet<u64>,
    /// state.db sessions whose turns are in `seen`.
    fingerprinted: HashSet<String>,
    /// Whether any store besides state.db can repeat its turns.
    dedupe: bool,
    system_json: sft::SystemCache,
    tokens: BTreeMap<&'static str, TokenTotals>,
    /// The first chat-template failure, reported once.
    template_error: Option<String>,
    /// Provenance, duplicates, quality rules, dry-run figures.
    curate: crate::curate::Curator,
}

/// What formatting a session needs besides the session.
struct Kit {
    opts: FormatOptions,
    counter: Counter,
    catalog: ToolCatalog,
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

impl Totals {
    fn wrote(&mut self, channel: Channel, count: Count, system_tokens: usize, missing: usize) {
        *self.samples.entry(channel.as_str()).or_default() += 1;
        let t = self.tokens.entry(channel.as_str()).or_default();
        t.samples += 1;
        t.total += count.total;
        t.trainable += count.trainable;
        t.longest = t.longest.max(count.total);
        t.system += system_tokens;
        t.tool_definitions_missing += usize::from(missing > 0);
    }

    fn saw_time(&mut self, t: Option<f64>) {
        if let Some(t) = t {
            self.first = Some(self.first.map_or(t, |f| f.min(t)));
            self.last = Some(self.last.map_or(t, |l| l.max(t)));
        }
    }
}

/// What the previous runs covered (`state` is `None` without `--state`).
struct Covered<'a> {
    watermark: i64,
    state: Option<&'a RunState>,
}

pub fn run(args: &ExportArgs) -> Result<u8> {
    let now = chrono::Utc::now().timestamp_micros() as f64 / 1e6;
    let mut cfg = ExportConfig::from_args(args, now)?;
    let home = HermesHome::resolve(&args.home)?;
    let mut report = Report::new(cfg.strict, cfg.quiet);

    // Every path this run writes, resolved and checked first.
    let system_file = matches!(cfg.system, crate::config::SystemPolicy::Fixed(_))
        .then(|| std::path::Path::new(&args.system_prompt));
    let plan = crate::paths::plan(&cfg.out, cfg.state.as_deref(), &home, system_file)?;

    // One run at a time per state file (or per output). A dry run writes
    // nothing, not even a lock or a cleanup.
    let dry_run = cfg.curate.dry_run;
    let _lock = plan
        .lock
        .as_deref()
        .filter(|_| !dry_run)
        .map(RunLock::acquire)
        .transpose()?;
    // Leftovers of a killed run (we hold the lock, so nobody owns them).
    let targets: Vec<std::path::PathBuf> = match &plan.dest {
        Dest::File(p) => vec![p.clone()],
        Dest::Dir(d) => DIR_FILES.iter().map(|n| d.join(n)).collect(),
        Dest::Stdout | Dest::Special(_) => Vec::new(),
    };
    for t in targets.iter().chain(&plan.state).filter(|_| !dry_run) {
        crate::sink::remove_stale_partials(t);
    }
    let state = plan.state.as_deref().map(RunState::load).transpose()?;
    // A cumulative output belongs to one state, format and style.
    let identity = coverage::identity(&cfg, &plan);
    coverage::check_output(state.as_ref(), &plan, &identity)?;
    let mut stores = Stores::open(&home, &mut report)?;
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
    if let Some(db) = stores.state.as_mut() {
        // A text longer than twice the sample budget can never be trained on.
        db.set_limits(cfg.max_tokens as u64 * 8 + 4096, cfg.include_reasoning);
    }
    let stores = stores;
    let mut redactor = cfg.redact.then(|| Redactor::new(Some(&home.dir)));
    if let Some(r) = &redactor {
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
    }

    let top = match &stores.state {
        Some(db) => db.max_message_id()?,
        None => 0,
    };
    let covered = Covered {
        watermark: state.as_ref().map_or(0, |s| s.watermark),
        state: state.as_ref(),
    };
    let selection = coverage::selection(&cfg);
    if let Some(s) = &state
        && top < s.watermark
    {
        report.warn(format_args!(
            "state.db holds messages up to id {top}, but the state file has seen up to {}; was state.db replaced? Only newer ids will be exported",
            s.watermark
        ));
    }
    // A first incremental run reads everything, streaming like a full one.
    // Later runs read the sessions touched since, and those holding pending
    // turns that this run's filters may now take.
    let db_heads = match (&state, &stores.state) {
        (Some(s), Some(db)) if s.watermark > 0 => {
            Some(coverage::heads_to_read(s, db, &cfg, &selection)?)
        }
        _ => None,
    };
    let progress_len = match (&db_heads, &stores.state) {
        (Some(h), _) => h.len() as u64,
        (None, Some(db)) => db
            .connection()
            .query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get::<_, i64>(0))
            .unwrap_or(0)
            .max(0) as u64,
        _ => 0,
    };
    report.start_progress(progress_len, "exporting");

    if let SystemPolicy::Soul(soul) = &mut cfg.system {
        *soul = std::fs::read_to_string(home.dir.join("SOUL.md")).ok();
    }
    let mut kit = Kit {
        opts: cfg.format_options(),
        counter: Counter::new(cfg.tokenizer.as_deref())?,
        catalog: ToolCatalog::new(&stores.files),
    };
    let mut output = if dry_run {
        Output::discard()
    } else {
        Output::open(&plan.dest, state.as_ref(), cfg.valid_fraction)?
    };
    let mut totals = Totals {
        curate: crate::curate::Curator::new(
            cfg.curate.clone(),
            state.as_ref().map(|s| &s.curation),
        ),
        dedupe: stores.responses.is_some()
            || !stores.files.snapshots.is_empty()
            || !stores.files.transcripts.is_empty(),
        ..Totals::default()
    };
    if let (Some(r), crate::config::SystemPolicy::Fixed(text)) =
        (redactor.as_mut(), &mut cfg.system)
    {
        r.string(text);
    }
    let unselected = std::cell::RefCell::new(Vec::new());
    stores.each_session(
        &mut report,
        db_heads,
        &|h| cfg.wants(h),
        &mut |h| unselected.borrow_mut().push(h.id.clone()),
        &mut |session, report| {
            report.tick();
            if session.origin != Some(Origin::StateDb) && totals.dedupe {
                coverage::fingerprint_db_copy(
                    &stores,
                    &session.id,
                    cfg.strict,
                    report,
                    (&mut totals.seen, &mut totals.fingerprinted),
                    redactor.as_mut(),
                )?;
            }
            export_session(
                session,
                &cfg,
                &mut kit,
                &covered,
                report,
                &mut totals,
                &mut output,
                redactor.as_mut(),
            )
        },
    )?;
    report.finish_progress();
    totals.coverage.unselected = unselected.into_inner();

    let redactions = redactor
        .as_ref()
        .map(|r| r.counts.clone())
        .unwrap_or_default();
    if let Some(e) = &totals.template_error {
        report.warn(format_args!(
            "the chat template failed on some samples (skipped as template_error): {e}"
        ));
    }
    let counted_with = kit.counter.describe();
    if dry_run {
        // The report is what a dry run makes: on stderr, even with --quiet,
        // so that stdout stays for data (a dry run has none).
        eprint!(
            "{}",
            totals.curate.stats.render(
                coverage::format_name(&cfg),
                if kit.counter.is_exact() {
                    "exact"
                } else {
                    "estimated"
                },
                &report.skipped
            )
        );
        return Ok(if report.partial {
            exit::PARTIAL
        } else {
            exit::OK
        });
    }
    // The manifest as written, for the dataset card.
    let written_manifest = std::cell::RefCell::new(None);
    let written = output.finish(&|w| {
        let m = manifest(
            &cfg,
            &stores,
            &report,
            &totals,
            &redactions,
            top.max(covered.watermark),
            w,
            (&counted_with, kit.counter.is_exact()),
        );
        let bytes = serde_json::to_vec_pretty(&m)?;
        *written_manifest.borrow_mut() = Some(m);
        Ok(bytes)
    })?;
    if let (Dest::Dir(dir), Some(m)) = (&plan.dest, written_manifest.into_inner()) {
        crate::card::write(dir, &m)?;
    }

    if let (Some(path), Some(mut st)) = (&plan.state, state) {
        if written.as_ref().is_some_and(|w| !w.delivered) {
            return Err(Failure::new(
                exit::ERROR,
                "the reader closed the output before every line was delivered; the state file was not advanced, so the next run sends these lines again",
            )
            .into());
        }
        totals.curate.remember(&mut st.curation);
        let changed = std::mem::take(&mut totals.coverage).commit(
            &mut st,
            written.as_ref(),
            top,
            selection,
            identity,
        );
        if changed {
            crate::stall::point("before-state");
            st.save(path)?;
        }
    }
    summarize(
        &report,
        &totals,
        &cfg,
        &redactions,
        written.is_none(),
        kit.counter.is_exact(),
    );
    Ok(if report.partial {
        exit::PARTIAL
    } else {
        exit::OK
    })
}

#[allow(clippy::too_many_arguments)]
fn export_session(
    mut session: Session,
    cfg: &ExportConfig,
    kit: &mut Kit,
    covered: &Covered<'_>,
    report: &mut Report,
    totals: &mut Totals,
    output: &mut Output,
    mut redactor: Option<&mut Redactor>,
) -> Result<()> {
    let channel = cfg.channel_of(&head_of(&session));
    let mut rebuilt = rebuild::rebuild(&session);
    add_stats(&mut totals.history, &rebuilt.stats);
    if crate::curate::quality::harness_only(&rebuilt) {
        report.skip(crate::curate::reason::HARNESS_ONLY);
        return Ok(());
    }
    if let Some(r) = redactor.as_deref_mut() {
        // Every string once, before any sample repeats it.
        rebuilt.messages.iter_mut().for_each(|m| r.message(m));
        for alt in &mut rebuilt.alternatives {
            alt.rejected.iter_mut().for_each(|m| r.message(m));
        }
    }
    let system = system_text(&session, &cfg.system)
        .map(|text| totals.system_json.get(&text, redactor.as_deref_mut()));
    let session_tools = if kit.opts.tools == ToolsPolicy::None {
        SessionTools::default()
    } else {
        let called = called_names(&rebuilt.messages);
        let catalog = &mut kit.catalog;
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
    let session = &session;
    let mut exchanges = format::exchanges(&rebuilt.messages);
    if cfg.format == Format::Sft {
        crate::curate::quality::mark_short_replies(&mut exchanges, cfg.curate.min_reply_chars);
    }
    // A turn whose failed call was taken out for a tool-retry pair would
    // teach a reply that may speak of the removed call: not SFT data.
    for alt in &rebuilt.alternatives {
        if alt.signal == crate::rebuild::Signal::ToolRetry {
            let k = rebuilt.messages[..alt.prompt_end]
                .iter()
                .filter(|m| m.role == Role::User)
                .count();
            if let Some(ex) = k.checked_sub(1).and_then(|k| exchanges.get_mut(k)) {
                ex.problem = ex.problem.or(Some("retried_tool_call"));
            }
        }
    }
    let from_db = session.origin == Some(Origin::StateDb);
    // Which turns no committed run has covered yet. state.db turns: rows
    // past the watermark, or listed as pending (a filter left them out);
    // rows up to `resume_after` belong to the previous part of a long
    // session and are only context here. Other sessions: by identity.
    let pending = covered.state.and_then(|s| s.pending.get(&session.id));
    let context_upto = session.resume_after.unwrap_or(0);
    let idents = if from_db {
        Vec::new()
    } else {
        identities(&exchanges)
    };
    let known = covered.state.and_then(|s| s.covered_turns.get(&session.id));
    let key_of = |msgs: &[Message]| msgs.iter().find_map(|m| m.row_id);
    let is_new = |index: usize, msgs: &[Message]| -> bool {
        if !from_db {
            return known.is_none_or(|k| k.binary_search(&idents[index]).is_err());
        }
        let (Some(key), Some(last)) = (key_of(msgs), msgs.iter().filter_map(|m| m.row_id).max())
        else {
            // Turns recovered from a snapshot have no row id: they predate
            // the compaction, so only a first run takes them.
            return covered.watermark == 0;
        };
        key > context_upto
            && (last > covered.watermark
                || pending.is_some_and(|p| {
                    p.has_turn(key) || p.unselected_after.is_some_and(|a| last > a)
                }))
    };
    let in_window = |ex: &Exchange<'_>| cfg.in_window(ex.timestamp.or(session.started_at));
    let mut duplicates = 0;
    // Turns another store's copy of which is exported: never context.
    let mut copied = vec![false; exchanges.len()];
    let mut fresh = vec![false; exchanges.len()];
    let mut usable = vec![false; exchanges.len()];
    let mut selected: Vec<bool> = exchanges
        .iter()
        .enumerate()
        .map(|(i, ex)| {
            if totals.dedupe {
                let print = fingerprint(ex.msgs);
                if from_db {
                    totals.fingerprinted.insert(session.id.clone());
                    totals.seen.insert(print);
                } else if totals.seen.contains(&print) {
                    duplicates += 1;
                    copied[i] = true;
                    return false;
                }
            }
            fresh[i] = is_new(i, ex.msgs);
            usable[i] = in_window(ex);
            usable[i] && fresh[i]
        })
        .collect();
    report.skip_n("turn_already_in_state_db", duplicates);
    for ex in exchanges.iter().zip(&selected).filter(|(_, s)| **s) {
        if ex.0.problem == Some("tool_arguments_too_deep") {
            report.warn(format_args!(
                "session {}: a turn's tool-call arguments are nested deeper than 128 levels; the turn is skipped (tool_arguments_too_deep)",
                session.id
            ));
        }
    }
    // `--min-turns` counts the session's complete turns in the window, old
    // and new, so a session that reaches it exports its pending turns then.
    let complete = exchanges
        .iter()
        .zip(&usable)
        .filter(|(e, u)| **u && e.problem.is_none())
        .count();
    let too_few =
        cfg.format == Format::Sft && complete < cfg.min_turns && selected.iter().any(|s| *s);
    if covered.state.is_some() {
        // A turn is covered once a run selected it; one a filter left out
        // stays for a later run (never consumed by what was not exported).
        let mut left = Pending::default();
        let mut extend = false;
        for (i, ex) in exchanges.iter().enumerate() {
            let consumed = selected[i] && !too_few;
            if from_db {
                match key_of(ex.msgs) {
                    Some(key) if key > context_upto && fresh[i] && !consumed => {
                        left.add_turn(key, ex.timestamp.or(session.started_at), extend);
                        extend = true;
                    }
                    _ => extend = false,
                }
            } else if consumed {
                totals
                    .coverage
                    .covered
                    .entry(session.id.clone())
                    .or_default()
                    .push(idents[i]);
            }
        }
        if from_db {
            if too_few && !left.turns.is_empty() {
                left.complete = Some(complete);
            }
            if pending.is_some() {
                // Its old entry is replaced by what this run leaves.
                totals.coverage.read_db.insert(session.id.clone());
            }
            if !left.is_empty() {
                totals
                    .coverage
                    .pending
                    .entry(session.id.clone())
                    .or_default()
                    .merge(left);
            }
        }
    }

    // Curation, once coverage is settled (what it drops is consumed, never
    // pending): forgotten sessions and turns, the near-duplicate cap.
    if !totals.curate.select(
        &session.id,
        session.started_at,
        &exchanges,
        (&mut selected, &mut copied),
        cfg.format == Format::Sft,
        report,
    ) {
        // Nothing of it is ever exported: nothing stays pending either.
        if covered.state.is_some() && from_db {
            totals.coverage.pending.remove(&session.id);
            totals.coverage.read_db.insert(session.id.clone());
        }
        return Ok(());
    }
    let source = session.source.as_str();
    let system_tokens = system.as_ref().map_or(0, |s| kit.system_tokens(s));
    let mut fitter = Fitter::new(&mut kit.counter, kit.opts.max_tokens);
    let mut over_budget = 0;
    match cfg.format {
        Format::Sft => {
            if !selected.iter().any(|s| *s) {
                return Ok(());
            }
            if too_few {
                // Say why each turn could not count.
                for ex in exchanges.iter().zip(&selected).filter(|(_, s)| **s) {
                    if let Some(problem) = ex.0.problem {
                        report.skip(problem);
                    }
                }
                report.skip(if complete == 0 {
                    "no_complete_turn"
                } else {
                    "too_few_turns"
                });
                return Ok(());
            }
            let outcome = sft::samples(
                &exchanges,
                &selected,
                &copied,
                &kit.opts,
                system,
                &session_tools,
                &mut fitter,
            );
            for reason in outcome.skipped {
                over_budget += usize::from(reason == "over_budget");
                report.skip(reason);
            }
            if let Some(e) = outcome.template_error {
                totals.template_error.get_or_insert(e);
            }
            let parts = outcome.lines.len();
            for (k, (line, t, last)) in outcome.lines.into_iter().enumerate() {
                let meta = crate::curate::meta::Meta {
                    session: &session.id,
                    channel: channel.as_str(),
                    source,
                    first: crate::curate::meta::time(t),
                    last: crate::curate::meta::time(last),
                    part: (parts > 1).then_some(k + 1),
                    signal: None,
                };
                let Some(bytes) =
                    totals
                        .curate
                        .emit(line.to_json()?, &meta, (t, last), line.count, report)?
                else {
                    continue;
                };
                output.line(&session.id, &bytes)?;
                totals.saw_time(t);
                totals.wrote(channel, line.count, system_tokens, line.missing_tools);
            }
        }
        Format::Dpo => {
            let msgs = &rebuilt.messages;
            // The pair's prompt ends with its exchange's user turn.
            let selected_pair = |user: usize, _chosen_end: usize| -> bool {
                let index = msgs[..user].iter().filter(|m| m.role == Role::User).count();
                selected.get(index).copied().unwrap_or(false)
            };
            let outcome = dpo::pairs(
                &rebuilt,
                &kit.opts,
                system.as_ref().map(|s| s.text.as_str()),
                &session_tools,
                &mut fitter,
                &selected_pair,
            );
            for reason in outcome.skipped {
                over_budget += usize::from(reason == "over_budget");
                report.skip(reason);
            }
            if let Some(e) = outcome.template_error {
                totals.template_error.get_or_insert(e);
            }
            for (signal, line, count, missing, (t, last)) in outcome.lines {
                let value = serde_json::to_value(&line)?;
                if !totals
                    .curate
                    .dedupe
                    .under_cap(crate::curate::dedupe::line_key(&value))
                {
                    report.skip(crate::curate::reason::NEAR_DUPLICATE);
                    continue;
                }
                let meta = crate::curate::meta::Meta {
                    session: &session.id,
                    channel: channel.as_str(),
                    source,
                    first: crate::curate::meta::time(t),
                    last: crate::curate::meta::time(last),
                    part: None,
                    signal: Some(signal.as_str()),
                };
                let Some(bytes) = totals.curate.emit(
                    serde_json::to_vec(&line)?,
                    &meta,
                    (t, last),
                    count,
                    report,
                )?
                else {
                    continue;
                };
                output.line(&session.id, &bytes)?;
                totals.saw_time(t);
                totals.wrote(channel, count, system_tokens, missing);
                *totals.signals.entry(signal.as_str()).or_default() += 1;
            }
        }
    }
    totals
        .tokens
        .entry(channel.as_str())
        .or_default()
        .over_budget += over_budget;
    Ok(())
}

fn add_stats(total: &mut RebuildStats, s: &RebuildStats) {
    total.summaries += s.summaries;
    total.compaction_copies += s.compaction_copies;
    total.undone_rows += s.undone_rows;
    total.harness_rows += s.harness_rows;
    total.merged_user_turns += s.merged_user_turns;
}

fn per_channel(totals: &Totals, cfg: &ExportConfig) -> BTreeMap<&'static str, usize> {
    Channel::ALL
        .iter()
        .filter(|c| cfg.channels.is_empty() || cfg.channels.contains(c))
        .map(|c| {
            (
                c.as_str(),
                totals.samples.get(c.as_str()).copied().unwrap_or(0),
            )
        })
        .collect()
}

fn per_signal(totals: &Totals, cfg: &ExportConfig) -> BTreeMap<&'static str, usize> {
    cfg.signals
        .iter()
        .map(|s| {
            (
                s.as_str(),
                totals.signals.get(s.as_str()).copied().unwrap_or(0),
            )
        })
        .collect()
}

fn per_channel_tokens(totals: &Totals, cfg: &ExportConfig) -> BTreeMap<&'static str, Value> {
    Channel::ALL
        .iter()
        .filter(|c| cfg.channels.is_empty() || cfg.channels.contains(c))
        .map(|c| {
            let t = totals.tokens.get(c.as_str()).copied().unwrap_or_default();
            let share = if t.total == 0 {
                0.0
            } else {
                (t.trainable as f64 / t.total as f64 * 1000.0).round() / 1000.0
            };
            (
                c.as_str(),
                json!({
                    "samples": t.samples,
                    "total": t.total,
                    "trainable": t.trainable,
                    "trainable_share": share,
                    "longest": t.longest,
                    "system": t.system,
                    "over_budget": t.over_budget,
                    "tool_definitions_missing": t.tool_definitions_missing,
                }),
            )
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn manifest(
    cfg: &ExportConfig,
    stores: &Stores,
    report: &Report,
    totals: &Totals,
    redactions: &BTreeMap<&'static str, usize>,
    watermark: i64,
    w: &crate::output::Written,
    (counted_with, exact): (&str, bool),
) -> Value {
    let mut sources = Vec::new();
    if let Some(db) = &stores.state {
        sources.push(json!({"store": "state.db", "path": db.path.display().to_string(), "schema_version": db.schema_version, "sessions_read": report.sessions_read.get(Origin::StateDb.as_str()).copied().unwrap_or(0)}));
    }
    if let Some(rs) = &stores.responses {
        sources.push(json!({"store": "response_store.db", "path": rs.path.display().to_string(), "schema_version": null, "sessions_read": report.sessions_read.get(Origin::ResponseStore.as_str()).copied().unwrap_or(0)}));
    }
    sources.push(json!({"store": "sessions", "path": stores.files.dir.display().to_string(), "schema_version": null,
        "sessions_read": report.sessions_read.get(Origin::SessionJson.as_str()).copied().unwrap_or(0) + report.sessions_read.get(Origin::Transcript.as_str()).copied().unwrap_or(0)}));
    let files: serde_json::Map<String, Value> = w
        .files
        .iter()
        .map(|(name, c)| (name.clone(), json!({"lines": c.lines, "bytes": c.bytes})))
        .collect();
    json!({
        "tool": "hermes-harvest",
        "version": env!("CARGO_PKG_VERSION"),
        "format": coverage::format_name(cfg),
        "cumulative": cfg.state.is_some(),
        "flags": std::env::args().skip(1).collect::<Vec<_>>(),
        "sources": sources,
        "counts": {
            "channels": per_channel(totals, cfg),
            "signals": if cfg.format == Format::Dpo { json!(per_signal(totals, cfg)) } else { Value::Null },
            "skipped": report.skipped,
            "new_lines": w.new_lines,
        },
        "tokens": {
            "counted_with": counted_with,
            "exact": exact,
            "max_tokens": cfg.max_tokens,
            "trainer_max_length_at_least": cfg.max_tokens,
            "tools_policy": match cfg.tools {
                ToolsPolicy::Used => "used",
                ToolsPolicy::All => "all",
                ToolsPolicy::None => "none",
            },
            "system_prompt_policy": match cfg.system {
                SystemPolicy::Session => "session",
                SystemPolicy::Soul(_) => "soul",
                SystemPolicy::None => "none",
                SystemPolicy::Fixed(_) => "file",
            },
            "channels": per_channel_tokens(totals, cfg),
        },
        "redactions": if cfg.redact { json!(redactions) } else { Value::Null },
        "time_range": {"first": iso_time(totals.first), "last": iso_time(totals.last)},
        "watermark": {"state_db_message_id": watermark},
        "split": {"valid_fraction": cfg.valid_fraction, "by": "session", "files": files, "forced_valid_sessions": w.forced_valid.len()},
        "created": iso_time(Some(chrono::Utc::now().timestamp() as f64)),
        "curation": totals.curate.manifest(),
    })
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
    let signals = match cfg.format {
        Format::Dpo => format!("; pairs per signal: {}", counts(&per_signal(totals, cfg))),
        Format::Sft => String::new(),
    };
    let tokens: Vec<String> = Channel::ALL
        .iter()
        .filter_map(|c| {
            let t = totals.tokens.get(c.as_str())?;
            (t.samples > 0 || t.over_budget > 0).then(|| {
                format!(
                    "{} {} (trainable {}, {:.0}%; longest {}; over budget {}{})",
                    c.as_str(),
                    t.total,
                    t.trainable,
                    if t.total == 0 {
                        0.0
                    } else {
                        100.0 * t.trainable as f64 / t.total as f64
                    },
                    t.longest,
                    t.over_budget,
                    if t.tool_definitions_missing > 0 {
                        format!(
                            "; {} without a called tool's definition",
                            t.tool_definitions_missing
                        )
                    } else {
                        String::new()
                    }
                )
            })
        })
        .collect();
    report.info(format_args!(
        "read {} sessions ({}); wrote {written} {} lines ({}){signals}; tokens ({} of at most {} each): {}; skipped: {}; redacted: {}; history: {} summaries and {} compaction copies dropped, {} undone rows left out",
        report.sessions_read.values().sum::<usize>(),
        counts(&report.sessions_read),
        match cfg.format {
            Format::Sft => "sft",
            Format::Dpo => "dpo",
        },
        counts(&per_channel(totals, cfg)),
        if exact { "exact" } else { "estimated" },
        cfg.max_tokens,
        if tokens.is_empty() {
            "none".to_string()
        } else {
            tokens.join(", ")
        },
        counts(&report.skipped),
        if cfg.redact { counts(redactions) } else { "off".to_string() },
        h.summaries,
        h.compaction_copies,
        h.undone_rows,
    ));
}
