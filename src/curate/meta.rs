//! `meta`: where a line came from, as the line's last key.
//!
//! `{"session", "unit", "channel", "source", "first", "last", "part",
//! "signal"}`: the session id (the root of a compression lineage), the
//! line's split unit (see `output`: the session, or one UTC day of a nexus
//! session), its channel, the
//! raw `sessions.source`, the times of the first and last turn the line
//! trains on (RFC 3339 UTC; left out when unknown), `part` (the line's
//! 1-based place among the lines one session gave in one run, when it gave
//! more than one) and, for DPO, the preference signal.

use serde::Serialize;

/// The provenance of one line.
#[derive(Debug, Clone, Serialize)]
pub struct Meta<'a> {
    pub session: &'a str,
    pub unit: &'a str,
    pub channel: &'static str,
    pub source: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<&'static str>,
}

impl<'a> Meta<'a> {
    /// The provenance of a line of `session` in `unit` whose turns span
    /// `times` (`part` and `signal` unset).
    pub fn of(
        session: &'a crate::model::Session,
        unit: &'a str,
        channel: crate::model::Channel,
        (first, last): (Option<f64>, Option<f64>),
    ) -> Meta<'a> {
        Meta {
            session: &session.id,
            unit,
            channel: channel.as_str(),
            source: &session.source,
            first: time(first),
            last: time(last),
            part: None,
            signal: None,
        }
    }
}

/// The split unit of a turn of `session` at time `t`: the session (the
/// root of its lineage), or for a nexus session, whose one persistent
/// session would hold nearly every line, `<session>@<YYYY-MM-DD>`: the UTC
/// day of the turn (of the session's start when the turn has no time).
pub fn unit(
    session: &crate::model::Session,
    channel: crate::model::Channel,
    t: Option<f64>,
) -> String {
    let day = t
        .or(session.started_at)
        .filter(|_| channel == crate::model::Channel::Nexus)
        .and_then(|t| chrono::DateTime::from_timestamp(t.floor() as i64, 0));
    match day {
        Some(d) => format!("{}@{}", session.id, d.format("%Y-%m-%d")),
        None => session.id.clone(),
    }
}

/// Epoch seconds as RFC 3339 UTC.
pub fn time(t: Option<f64>) -> Option<String> {
    match crate::time::iso_time(t) {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    }
}

/// `line` (one JSON object, no newline) with `"meta": {...}` added as its
/// last key.
pub fn append(line: &[u8], meta: &Meta<'_>) -> serde_json::Result<Vec<u8>> {
    let body = line.strip_suffix(b"}").expect("a line is one JSON object");
    let mut out = Vec::with_capacity(line.len() + 160);
    out.extend_from_slice(body);
    if body.last() != Some(&b'{') {
        out.push(b',');
    }
    out.extend_from_slice(b"\"meta\":");
    serde_json::to_writer(&mut out, meta)?;
    out.push(b'}');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta<'static> {
        Meta {
            session: "s1",
            unit: "s1",
            channel: "nexus",
            source: "api_server",
            first: time(Some(0.0)),
            last: None,
            part: Some(2),
            signal: None,
        }
    }

    #[test]
    fn meta_is_the_last_key() {
        let out = append(br#"{"messages":[]}"#, &meta()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"messages":[],"meta":{"session":"s1","unit":"s1","channel":"nexus","source":"api_server","first":"1970-01-01T00:00:00Z","part":2}}"#
        );
    }

    #[test]
    fn an_empty_object_gets_no_comma() {
        let out = append(b"{}", &meta()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["meta"]["session"], "s1");
    }
}
