//! Turn identities, the session filters as the state records them, and the
//! checks that keep a cumulative output to one state (see `state`, which
//! holds the state file and what each run covers).

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::Value;

use crate::config::ExportConfig;
use crate::exit::{self, Failure};
use crate::format::Exchange;
use crate::hash::stable_hash;
use crate::model::Message;
use crate::paths::{Dest, Plan};
use crate::state::{OutputIdentity, RunState};

/// How units are split (recorded in the state's output identity).
pub const SPLIT: &str = "units-balanced";
/// The split rule of versions before 4 (migrated, see `output::migrate_units`).
pub const LEGACY_SPLIT: &str = "fnv1a-fmix64";

/// A turn's identity across stores: its user text and its final answer.
pub fn fingerprint(msgs: &[Message]) -> u64 {
    let mut key = String::new();
    for m in [msgs.first(), msgs.last()].into_iter().flatten() {
        key.push_str(m.content.trim());
        key.push('\u{1}');
    }
    stable_hash(&key)
}

/// A turn's identity within a session without row ids: its fingerprint and
/// how many identical turns came before it.
pub fn identities(exchanges: &[Exchange<'_>]) -> Vec<u64> {
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    exchanges
        .iter()
        .map(|ex| {
            let print = fingerprint(ex.msgs);
            let n = seen.entry(print).or_default();
            *n += 1;
            stable_hash(&format!("{print:016x}:{n}"))
        })
        .collect()
}

/// The session filters, as recorded in the state.
pub fn selection(cfg: &ExportConfig) -> String {
    format!(
        "channels={:?} sources={:?} sessions={:?} models={:?} nexus_prefix={:?}{}",
        cfg.channels.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        cfg.sources,
        cfg.sessions,
        cfg.models,
        cfg.nexus_prefix,
        // Only when given, so states written before the flag keep their selection.
        if cfg.exclude.is_empty() {
            String::new()
        } else {
            let flags: Vec<&str> = cfg.exclude.iter().map(|f| f.as_str()).collect();
            format!(" exclude={flags:?}")
        }
    )
}

/// Whether pending turns in `[first, last]` may fall in the time window.
/// Refuses a one-shot export into a directory that holds a cumulative
/// dataset kept with `--state` (it would replace the committed lines).
fn refuse_overwriting_cumulative(dir: &std::path::Path) -> Result<()> {
    let path = dir.join("manifest.json");
    let Ok(Some(bytes)) = crate::safe_io::read_optional(&path, crate::safe_io::MAX_SETTINGS_BYTES)
    else {
        return Ok(());
    };
    let Ok(m) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(());
    };
    let by_flags = m["flags"].as_array().is_some_and(|f| {
        f.iter().any(|a| {
            a.as_str()
                .is_some_and(|a| a == "--state" || a.starts_with("--state="))
        })
    });
    if m["cumulative"] == Value::Bool(true) || by_flags {
        return Err(Failure::new(
            exit::ERROR,
            format!(
                "{} holds a cumulative dataset kept with --state; an export without that --state would replace its committed lines. Nothing was written: export elsewhere, or pass the same --state",
                dir.display()
            ),
        )
        .into());
    }
    Ok(())
}

/// The output identity of this run.
pub fn identity(cfg: &ExportConfig, plan: &Plan) -> OutputIdentity {
    OutputIdentity {
        format: cfg.shape.as_str().to_string(),
        target: if cfg.string_arguments { "openai" } else { "hf" }.to_string(),
        out: plan.out_id.clone(),
        split: SPLIT.to_string(),
    }
}

/// Refuses, before anything is written, an output that belongs to another
/// state: a state file recorded for another format, style, target or
/// destination, or a one-shot export into a cumulative directory.
pub fn check_output(
    state: Option<&RunState>,
    plan: &Plan,
    identity: &OutputIdentity,
) -> Result<()> {
    if let (Some(st), Some(path)) = (state, &plan.state)
        && let Some(old) = &st.identity
        && old != identity
    {
        return Err(Failure::new(
            exit::ERROR,
            format!(
                "state file {} belongs to the export {}; this run is {}. Nothing was written: use one state file per output",
                path.display(),
                old.describe(),
                identity.describe()
            ),
        )
        .into());
    }
    if let (None, Dest::Dir(d)) = (state, &plan.dest) {
        refuse_overwriting_cumulative(d)?;
    }
    Ok(())
}
