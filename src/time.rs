//! Times as the outputs write them. A helper floor: the manifest, the card,
//! curation's memory and `sources` all print times this one way.

/// Epoch seconds as an RFC 3339 UTC time (`2026-11-25T13:25:44Z`), or null.
pub fn iso_time(t: Option<f64>) -> serde_json::Value {
    t.and_then(|t| chrono::DateTime::from_timestamp_micros((t * 1e6) as i64))
        .map_or(serde_json::Value::Null, |d| {
            serde_json::Value::String(d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        })
}
