//! A test hook for kill tests: with `HERMES_HARVEST_STALL_AT=<point>` in
//! the environment, a run that reaches that point says so on stderr and
//! waits there forever, so a test can kill it at an exact moment instead of
//! guessing with a timer. Points: `mid-output` (some lines written to
//! train.jsonl, on disk), `outputs-committed` (train/valid synced, manifest
//! not yet written), `before-state` (outputs and manifest in place, state
//! not yet replaced); for `forget`: `forget-staged` (the new contents staged
//! beside the files, no journal yet), `forget-journal` (the journal saved,
//! the files not yet renamed).

use std::time::Duration;

/// Lines written to train.jsonl before `mid-output`.
pub const MID_OUTPUT_LINES: u64 = 16;

pub fn point(name: &str) {
    if std::env::var_os("HERMES_HARVEST_STALL_AT").is_some_and(|v| v == name) {
        eprintln!("hermes-harvest: stalled at {name}");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}
