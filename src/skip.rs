//! Why a turn, sample or input was left out: the one list of skip reasons.
//! Each reason's name is what the summary and the manifest count it under,
//! so a name never changes once released.

/// Defines [`Skip`] and its names from one table.
macro_rules! reasons {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        /// A reason something was skipped.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Skip {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Skip {
            /// Every reason, in declaration order.
            pub const ALL: &[Skip] = &[$(Skip::$variant,)*];

            /// The name the summary and the manifest use.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Skip::$variant => $name,)*
                }
            }
        }
    };
}

reasons! {
    /// Some input (file, line, row) could not be read.
    UnreadableInput => "unreadable_input",
    /// A message too large for any sample.
    OversizeMessage => "oversize_message",
    /// The user turn has no text.
    EmptyPrompt => "empty_prompt",
    /// The user turn got no assistant reply.
    NoReply => "no_reply",
    /// The final reply is empty.
    EmptyReply => "empty_reply",
    /// The turn ends without a final assistant text.
    IncompleteTurn => "incomplete_turn",
    /// The model stopped at its length limit.
    TruncatedReply => "truncated_reply",
    /// The model's reply ended in an error or a content filter.
    ErroredReply => "errored_reply",
    /// A tool call has no result.
    UnansweredToolCall => "unanswered_tool_call",
    /// A tool call has no name or id.
    BrokenToolCall => "broken_tool_call",
    /// Tool-call arguments nested deeper than a trainer can load.
    ToolArgumentsTooDeep => "tool_arguments_too_deep",
    /// Tool-call arguments that are not a JSON object.
    BadToolArguments => "bad_tool_arguments",
    /// A tool result answers no call.
    OrphanToolResult => "orphan_tool_result",
    /// The turn's failed call was taken out for a tool-retry pair.
    RetriedToolCall => "retried_tool_call",
    /// Another store's copy of the turn is exported from state.db.
    TurnAlreadyInStateDb => "turn_already_in_state_db",
    /// The session has no complete turn.
    NoCompleteTurn => "no_complete_turn",
    /// The session has fewer complete turns than `--min-turns`.
    TooFewTurns => "too_few_turns",
    /// Not even the shortest sample fits the token budget.
    OverBudget => "over_budget",
    /// The chat template failed on the sample.
    TemplateError => "template_error",
    /// A preference pair with no prompt before it.
    PairWithoutPrompt => "pair_without_prompt",
    /// A pair side with no message.
    EmptyPairSide => "empty_pair_side",
    /// A pair side that does not end in an assistant answer.
    PairSideWithoutAnswer => "pair_side_without_answer",
    /// Both sides of a pair say the same.
    ChosenEqualsRejected => "chosen_equals_rejected",
    /// Flat DPO strings cannot hold a tool exchange.
    ToolPairInFlatStyle => "tool_pair_in_flat_style",
    /// A line equal to one already written (meta aside).
    DuplicateSample => "duplicate_sample",
    /// An exchange past the near-duplicate cap.
    NearDuplicate => "near_duplicate",
    /// A reply shorter than `--min-reply-chars`.
    ShortReply => "short_reply",
    /// A session holding nothing but harness traffic.
    HarnessOnlySession => "harness_only_session",
    /// A session (or a turn before a time) that `forget` removed.
    ForgottenSession => "forgotten_session",
    /// An exchange whose normalised copy is already in the other split.
    CrossSplitCopy => "cross_split_copy",
    /// A session hidden in the desktop app, left out by `--exclude hidden`.
    HiddenSession => "hidden_session",
    /// A session the user archived, left out by `--exclude archived`.
    ArchivedSession => "archived_session",
    /// A session the idle sweep archived, left out by `--exclude auto-archived`.
    AutoArchivedSession => "auto_archived_session",
    /// A pinned session, left out by `--exclude pinned`.
    PinnedSession => "pinned_session",
}

impl Skip {
    /// The reason a session left out by `--exclude FLAG` is counted under.
    pub fn excluded(flag: crate::model::Listed) -> Skip {
        use crate::model::Listed;
        match flag {
            Listed::Hidden => Skip::HiddenSession,
            Listed::Archived => Skip::ArchivedSession,
            Listed::AutoArchived => Skip::AutoArchivedSession,
            Listed::Pinned => Skip::PinnedSession,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_snake_case() {
        let mut names: Vec<&str> = Skip::ALL.iter().map(|s| s.as_str()).collect();
        assert!(
            names
                .iter()
                .all(|n| n.bytes().all(|b| b == b'_' || b.is_ascii_lowercase()))
        );
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Skip::ALL.len());
    }
}
