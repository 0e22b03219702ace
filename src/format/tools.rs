//! Which tool definitions a sample carries (`--tools all|used|none`).
//!
//! Hermes offers ~40 tools in every session; their definitions alone are
//! larger than a trainer's default sequence length. The default, `used`,
//! carries the definitions of the tools the sample calls plus a few other
//! tools the session offered ("distractors", chosen deterministically per
//! session), so the model learns to choose a tool rather than to call
//! whatever it is shown, at a fraction of the tokens. A row that calls a
//! tool always carries that tool's definition: where the session recorded
//! none, the same-named definition from another session of the home is
//! used; a row whose call has no definition anywhere is written without
//! it and counted (`tool_definitions_missing`).

use std::collections::BTreeSet;

use serde_json::Value;

use crate::hash::stable_hash;
use crate::model::tool_name;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ToolsPolicy {
    /// Every tool the session offered (plus any called tool it lacked).
    All,
    /// The called tools plus [`DISTRACTORS`] other offered tools.
    #[default]
    Used,
    /// No tool definitions.
    None,
}

/// Other offered tools a `used` sample carries at most, when they fit.
pub const DISTRACTORS: usize = 2;

/// Definitions a session's samples can draw on.
#[derive(Debug, Default)]
pub struct SessionTools {
    /// What the session offered, in Hermes's order.
    pub offered: Vec<Value>,
    /// Called tools the session did not record, found elsewhere in the home.
    pub borrowed: Vec<Value>,
    /// Other offered tools in the order they are tried as distractors.
    pub distractor_order: Vec<usize>,
}

impl SessionTools {
    /// `lookup` finds a definition elsewhere in the home by name.
    pub fn new(
        session_id: &str,
        offered: Option<Vec<Value>>,
        called: &BTreeSet<String>,
        lookup: &mut dyn FnMut(&str) -> Option<Value>,
    ) -> SessionTools {
        let offered = offered.unwrap_or_default();
        let known: BTreeSet<&str> = offered.iter().filter_map(tool_name).collect();
        let borrowed = called
            .iter()
            .filter(|n| !known.contains(n.as_str()))
            .filter_map(|n| lookup(n))
            .collect();
        let mut distractor_order: Vec<usize> = (0..offered.len()).collect();
        distractor_order.sort_by_key(|&i| {
            let name = tool_name(&offered[i]).unwrap_or_default();
            (stable_hash(&format!("{session_id}\u{1}{name}")), i)
        });
        SessionTools {
            offered,
            borrowed,
            distractor_order,
        }
    }

    fn find(&self, name: &str) -> Option<&Value> {
        self.offered
            .iter()
            .chain(&self.borrowed)
            .find(|d| tool_name(d) == Some(name))
    }

    /// The definitions a sample calling `called` carries, without
    /// distractors, in a stable order (offered order, then borrowed), and
    /// how many called tools have no definition anywhere.
    pub fn for_calls(&self, policy: ToolsPolicy, called: &BTreeSet<&str>) -> (Vec<Value>, usize) {
        if policy == ToolsPolicy::None {
            return (Vec::new(), 0);
        }
        let missing = called.iter().filter(|n| self.find(n).is_none()).count();
        let defs = self
            .offered
            .iter()
            .chain(&self.borrowed)
            .filter(|d| {
                policy == ToolsPolicy::All || tool_name(d).is_some_and(|n| called.contains(n))
            })
            .cloned()
            .collect();
        (defs, missing)
    }

    /// Distractor candidates for a sample that already carries `carried`,
    /// best first.
    pub fn distractors<'a>(&'a self, carried: &'a [Value]) -> impl Iterator<Item = &'a Value> + 'a {
        self.distractor_order
            .iter()
            .map(|&i| &self.offered[i])
            .filter(move |d| !carried.iter().any(|c| tool_name(c) == tool_name(d)))
    }

    /// Puts `extra` into `tools` at its place in the offered order.
    pub fn insert(&self, tools: &mut Vec<Value>, extra: &Value) {
        let rank = |d: &Value| {
            self.offered
                .iter()
                .position(|o| tool_name(o) == tool_name(d))
                .unwrap_or(usize::MAX)
        };
        let at = tools
            .iter()
            .position(|t| rank(t) > rank(extra))
            .unwrap_or(tools.len());
        tools.insert(at, extra.clone());
    }
}

/// The tool names the messages call.
pub fn called_names<'a>(
    msgs: impl IntoIterator<Item = &'a crate::model::Message>,
) -> BTreeSet<String> {
    msgs.into_iter()
        .flat_map(|m| m.tool_calls.iter().map(|c| c.name.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(name: &str) -> Value {
        json!({"type": "function", "function": {"name": name, "parameters": {}}})
    }

    #[test]
    fn used_tools_keep_the_offered_order_and_borrow_what_is_missing() {
        let offered = vec![def("a"), def("b"), def("c"), def("d")];
        let called: BTreeSet<String> = ["c", "z"].iter().map(|s| s.to_string()).collect();
        let t = SessionTools::new("s1", Some(offered.clone()), &called, &mut |n| {
            (n == "z").then(|| def("z"))
        });
        let want: BTreeSet<&str> = ["z", "c"].into_iter().collect();
        let (tools, missing) = t.for_calls(ToolsPolicy::Used, &want);
        assert_eq!(missing, 0);
        let names: Vec<&str> = tools.iter().filter_map(tool_name).collect();
        assert_eq!(names, ["c", "z"]);
        assert_eq!(t.for_calls(ToolsPolicy::All, &want).0.len(), 5);
        assert!(t.for_calls(ToolsPolicy::None, &want).0.is_empty());
        let unknown: BTreeSet<&str> = ["y", "c"].into_iter().collect();
        let (defs, missing) = t.for_calls(ToolsPolicy::Used, &unknown);
        assert_eq!((defs.len(), missing), (1, 1));
        // Distractors: every other offered tool, in a per-session order.
        let d: Vec<&str> = t.distractors(&tools).filter_map(tool_name).collect();
        assert_eq!(d.len(), 3);
        assert!(!d.contains(&"c"));
        let again = SessionTools::new("s1", Some(offered), &called, &mut |_| None);
        let d2: Vec<&str> = again.distractors(&tools).filter_map(tool_name).collect();
        assert_eq!(d, d2);
        let mut with = tools.clone();
        t.insert(&mut with, &def("a"));
        let names: Vec<&str> = with.iter().filter_map(tool_name).collect();
        assert_eq!(names, ["a", "c", "z"]);
    }
}
