//! Stored message content (plain, `\0json:` structured/multimodal) and
//! stored `tool_calls` strings.
#![no_main]

use hermes_harvest::content;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = content::decode(s);
    let _ = content::decode(&format!("\0json:{s}"));
    let _ = content::tool_calls_from_str(Some(s));
    // Content as it appears in session files (string, list of parts, null).
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(s) {
        let _ = content::value_text(&v);
        let _ = content::parse_tool_calls(&v);
    }
});
