//! Perception events: building them from flags or JSON, checking them, and
//! rendering them as one user turn.
//!
//! The JSON form is described by `schemas/perception-event.schema.json`;
//! [`Event::from_json`] enforces the same rules in code (the shipped binary
//! carries no schema validator).

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Deserializer};

/// What happened in the Nexus. The wire names (JSON `type`, the rendered
/// turn) are the snake_case variant names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    ArchonEntering,
    ArchonMaterialized,
    ArchonDeparted,
    SceneChange,
    Tick,
}

/// One perception event from the Nexus.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: EventKind,
    /// Who the event is about (required for the `archon_*` events).
    pub actor: Option<String>,
    /// Position in the world.
    pub at: Option<[f64; 3]>,
    /// Free text.
    pub detail: Option<String>,
    /// World name.
    pub world: String,
}

/// The wire name of an event type, as in the JSON form and the rendered turn.
pub fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::ArchonEntering => "archon_entering",
        EventKind::ArchonMaterialized => "archon_materialized",
        EventKind::ArchonDeparted => "archon_departed",
        EventKind::SceneChange => "scene_change",
        EventKind::Tick => "tick",
    }
}

fn needs_actor(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::ArchonEntering | EventKind::ArchonMaterialized | EventKind::ArchonDeparted
    )
}

/// The JSON form: exactly these fields; a string field, when present, is a
/// string (not null); `at` is three numbers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventJson {
    #[serde(rename = "type")]
    kind: EventKind,
    #[serde(default, deserialize_with = "present_string")]
    actor: Option<String>,
    #[serde(default, deserialize_with = "present_at")]
    at: Option<[f64; 3]>,
    #[serde(default, deserialize_with = "present_string")]
    detail: Option<String>,
    #[serde(default, deserialize_with = "present_string")]
    world: Option<String>,
}

fn present_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

fn present_at<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[f64; 3]>, D::Error> {
    <[f64; 3]>::deserialize(d).map(Some)
}

impl Event {
    /// Builds an event from the command-line flags.
    pub fn from_flags(
        kind: EventKind,
        actor: Option<&str>,
        at: Option<&str>,
        detail: Option<&str>,
        world: &str,
    ) -> Result<Event> {
        let at = at
            .map(|s| parse_at(s).with_context(|| format!("--at {s:?}")))
            .transpose()?;
        Event::checked(
            kind,
            actor.map(str::to_owned),
            at,
            detail.map(str::to_owned),
            world.to_owned(),
        )
    }

    /// Builds an event from its JSON form. `default_world` is used when the
    /// event names no world.
    pub fn from_json(text: &str, default_world: &str) -> Result<Event> {
        let value: serde_json::Value =
            serde_json::from_str(text).context("the event is not valid JSON")?;
        if !value.is_object() {
            bail!("the event must be a JSON object");
        }
        let e: EventJson = serde_json::from_value(value).context("not a valid perception event")?;
        let world = e.world.unwrap_or_else(|| default_world.to_owned());
        Event::checked(e.kind, e.actor, e.at, e.detail, world)
    }

    fn checked(
        kind: EventKind,
        actor: Option<String>,
        at: Option<[f64; 3]>,
        detail: Option<String>,
        world: String,
    ) -> Result<Event> {
        let actor = actor.map(|a| one_line(&a)).filter(|a| !a.is_empty());
        let detail = detail.map(|d| one_line(&d)).filter(|d| !d.is_empty());
        let world = one_line(&world);
        if needs_actor(kind) && actor.is_none() {
            bail!("{} needs an actor (--actor NAME)", kind_name(kind));
        }
        if world.is_empty() {
            bail!("the world name is empty");
        }
        Ok(Event {
            kind,
            actor,
            at,
            detail,
            world,
        })
    }

    /// The user turn sent to Hermes for this event.
    ///
    /// One line, always the same for the same event:
    ///
    /// ```text
    /// [perception] <type>: <sentence>[ Detail: <detail>]
    /// ```
    ///
    /// | type | sentence |
    /// | --- | --- |
    /// | `archon_entering` | `Archon '<actor>' entered the Nexus[ at (x,y,z)] in world '<world>'.` |
    /// | `archon_materialized` | `Archon '<actor>' materialized[ at (x,y,z)] in world '<world>'.` |
    /// | `archon_departed` | `Archon '<actor>' departed the Nexus[ from (x,y,z)] in world '<world>'.` |
    /// | `scene_change` | `The scene changed[ at (x,y,z)] in world '<world>'[ (actor '<actor>')].` |
    /// | `tick` | `World '<world>' ticked[ at (x,y,z)][ (actor '<actor>')].` |
    ///
    /// Coordinates are written as the shortest decimal that reads back as the
    /// same number, without spaces (`12,0,4`; `-3.5,0.25,1e-7` becomes
    /// `(-3.5,0.25,0.0000001)`); `-0` is written `0`. Actor, world and
    /// detail are trimmed and any run of whitespace or control characters
    /// (including newlines) becomes one space, so a turn is always one line.
    pub fn render(&self) -> String {
        let at = |word: &str| {
            self.at
                .map(|[x, y, z]| format!(" {word} ({},{},{})", num(x), num(y), num(z)))
                .unwrap_or_default()
        };
        let actor = self.actor.as_deref().unwrap_or("");
        let by = if actor.is_empty() {
            String::new()
        } else {
            format!(" (actor '{actor}')")
        };
        let world = &self.world;
        let sentence = match self.kind {
            EventKind::ArchonEntering => {
                format!(
                    "Archon '{actor}' entered the Nexus{} in world '{world}'.",
                    at("at")
                )
            }
            EventKind::ArchonMaterialized => {
                format!(
                    "Archon '{actor}' materialized{} in world '{world}'.",
                    at("at")
                )
            }
            EventKind::ArchonDeparted => format!(
                "Archon '{actor}' departed the Nexus{} in world '{world}'.",
                at("from")
            ),
            EventKind::SceneChange => {
                format!("The scene changed{} in world '{world}'{by}.", at("at"))
            }
            EventKind::Tick => format!("World '{world}' ticked{}{by}.", at("at")),
        };
        let mut turn = format!("[perception] {}: {sentence}", kind_name(self.kind));
        if let Some(detail) = &self.detail {
            turn.push_str(" Detail: ");
            turn.push_str(detail);
        }
        turn
    }
}

/// `X,Y,Z` → three finite numbers.
pub fn parse_at(text: &str) -> Result<[f64; 3]> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    if parts.len() != 3 {
        bail!("expected three numbers X,Y,Z");
    }
    let mut xyz = [0.0; 3];
    for (slot, part) in xyz.iter_mut().zip(&parts) {
        let value: f64 = part
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .with_context(|| format!("{part:?} is not a finite number"))?;
        *slot = value;
    }
    Ok(xyz)
}

/// The shortest decimal form of a coordinate; `-0` as `0`.
fn num(v: f64) -> String {
    if v == 0.0 {
        "0".to_owned()
    } else {
        format!("{v}")
    }
}

/// Trims and collapses whitespace and control characters into single spaces.
fn one_line(s: &str) -> String {
    s.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind, actor: Option<&str>, at: Option<&str>, detail: Option<&str>) -> Event {
        Event::from_flags(kind, actor, at, detail, "nexus-prime").unwrap()
    }

    #[test]
    fn renders_every_kind() {
        let cases = [
            (
                ev(
                    EventKind::ArchonEntering,
                    Some("Ezra"),
                    Some("12,0,4"),
                    None,
                ),
                "[perception] archon_entering: Archon 'Ezra' entered the Nexus at (12,0,4) in world 'nexus-prime'.",
            ),
            (
                ev(
                    EventKind::ArchonMaterialized,
                    Some("Ezra"),
                    Some("1.5,-2,0"),
                    None,
                ),
                "[perception] archon_materialized: Archon 'Ezra' materialized at (1.5,-2,0) in world 'nexus-prime'.",
            ),
            (
                ev(
                    EventKind::ArchonDeparted,
                    Some("Ezra"),
                    None,
                    Some("through the east gate"),
                ),
                "[perception] archon_departed: Archon 'Ezra' departed the Nexus in world 'nexus-prime'. Detail: through the east gate",
            ),
            (
                ev(EventKind::SceneChange, None, None, Some("dusk falls")),
                "[perception] scene_change: The scene changed in world 'nexus-prime'. Detail: dusk falls",
            ),
            (
                ev(EventKind::SceneChange, Some("Ezra"), Some("0,0,0"), None),
                "[perception] scene_change: The scene changed at (0,0,0) in world 'nexus-prime' (actor 'Ezra').",
            ),
            (
                ev(EventKind::Tick, None, None, None),
                "[perception] tick: World 'nexus-prime' ticked.",
            ),
            (
                ev(
                    EventKind::Tick,
                    Some("Ezra"),
                    Some("-0,2e3,0.1"),
                    Some("t=42"),
                ),
                "[perception] tick: World 'nexus-prime' ticked at (0,2000,0.1) (actor 'Ezra'). Detail: t=42",
            ),
        ];
        for (event, want) in cases {
            assert_eq!(event.render(), want);
        }
    }

    #[test]
    fn flags_and_json_render_the_same() {
        let flags = Event::from_flags(
            EventKind::ArchonEntering,
            Some("Ezra"),
            Some(" 12, 0 ,4 "),
            Some("hello"),
            "w",
        )
        .unwrap();
        let json = Event::from_json(
            r#"{"type":"archon_entering","actor":"Ezra","at":[12,0.0,4],"detail":"hello","world":"w"}"#,
            "ignored",
        )
        .unwrap();
        assert_eq!(flags, json);
        assert_eq!(flags.render(), json.render());
    }

    #[test]
    fn json_world_defaults_to_the_flag() {
        let e = Event::from_json(r#"{"type":"tick"}"#, "w2").unwrap();
        assert_eq!(e.world, "w2");
    }

    #[test]
    fn collapses_whitespace() {
        let e = ev(
            EventKind::ArchonEntering,
            Some("  Ez\nra "),
            None,
            Some("a\n\tb\r\nc"),
        );
        assert_eq!(
            e.render(),
            "[perception] archon_entering: Archon 'Ez ra' entered the Nexus in world 'nexus-prime'. Detail: a b c"
        );
    }

    #[test]
    fn rejects_bad_events() {
        let bad_json = [
            ("[]", "JSON object"),
            (r#"["tick"]"#, "JSON object"),
            ("{", "not valid JSON"),
            (r#"{"actor":"x"}"#, "missing field `type`"),
            (r#"{"type":"explode"}"#, "unknown variant `explode`"),
            (r#"{"type":7}"#, "invalid type: integer `7`"),
            (r#"{"type":"archon_entering"}"#, "needs an actor"),
            (
                r#"{"type":"archon_entering","actor":"  "}"#,
                "needs an actor",
            ),
            (r#"{"type":"tick","at":[1,2]}"#, "array of length 3"),
            (r#"{"type":"tick","at":[1,2,"3"]}"#, "expected f64"),
            (r#"{"type":"tick","at":"1,2,3"}"#, "an array of length 3"),
            (r#"{"type":"tick","at":[1,2,1e999]}"#, "number out of range"),
            (r#"{"type":"tick","actr":"x"}"#, "unknown field `actr`"),
            (r#"{"type":"tick","world":""}"#, "world name is empty"),
            (r#"{"type":"tick","detail":5}"#, "expected a string"),
            (r#"{"type":"tick","detail":null}"#, "expected a string"),
            (r#"{"type":"tick","at":null}"#, "an array of length 3"),
        ];
        for (text, want) in bad_json {
            let err = format!("{:#}", Event::from_json(text, "w").unwrap_err());
            assert!(err.contains(want), "{text}: {err}");
        }
        for at in ["1,2", "1,2,3,4", "1,x,3", "1,inf,3", "NaN,0,0", ""] {
            assert!(
                Event::from_flags(EventKind::Tick, None, Some(at), None, "w").is_err(),
                "{at}"
            );
        }
        assert!(Event::from_flags(EventKind::ArchonDeparted, None, None, None, "w").is_err());
    }
}
