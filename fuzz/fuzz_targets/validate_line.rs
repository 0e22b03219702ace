//! `validate`'s line checker over a whole file (lines split on `\n`), so
//! the per-file shape and tool-argument flavour are exercised too.
#![no_main]

use std::sync::OnceLock;

use hermes_harvest::validate::{LineChecker, Schemas};
use libfuzzer_sys::fuzz_target;

fn schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| Schemas::load().expect("built-in schemas load"))
}

fuzz_target!(|data: &[u8]| {
    let mut checker = LineChecker::new(schemas(), None);
    for line in data.split(|&b| b == b'\n') {
        let _ = checker.check(line);
    }
});
