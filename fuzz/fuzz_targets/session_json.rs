//! `session_<id>.json` snapshots: parse, then rebuild the conversation.
#![no_main]

use hermes_harvest::{rebuild::rebuild, source::session_files::parse_snapshot};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(session) = parse_snapshot(data, Some("fuzz")) {
        let _ = rebuild(&session);
    }
});
