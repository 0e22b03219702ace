//! Legacy `<id>.jsonl` transcripts: parse (bad lines are reported, not
//! fatal), then rebuild the conversation.
#![no_main]

use hermes_harvest::{rebuild::rebuild, source::session_files::parse_transcript};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(session) = parse_transcript(data, "fuzz", &mut |_, _| Ok(())) {
        let _ = rebuild(&session);
    }
});
