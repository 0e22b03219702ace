//! Perception events for `send`: parse the JSON form, render the turn.
#![no_main]

use hermes_harvest::send::event::Event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(event) = Event::from_json(s, "world") {
        let turn = event.render();
        assert!(
            !turn.contains('\n'),
            "a rendered turn is one line: {turn:?}"
        );
    }
});
