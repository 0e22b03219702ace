//! The shape of an output line: SFT messages, TRL conversational DPO, or
//! mlx-lm-lora's flat DPO strings. The names are the ones the state, the
//! manifest and `validate` print.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Sft,
    Dpo,
    DpoFlat,
}

impl Shape {
    pub fn as_str(self) -> &'static str {
        match self {
            Shape::Sft => "sft",
            Shape::Dpo => "dpo",
            Shape::DpoFlat => "dpo-flat",
        }
    }

    /// Preference pairs, in either style.
    pub fn is_dpo(self) -> bool {
        self != Shape::Sft
    }

    /// The shape a line looks like, if any.
    pub fn of(v: &Value) -> Option<Shape> {
        if v.get("messages").is_some() {
            Some(Shape::Sft)
        } else {
            match v.get("prompt") {
                Some(Value::Array(_)) => Some(Shape::Dpo),
                Some(Value::String(_)) => Some(Shape::DpoFlat),
                _ => None,
            }
        }
    }
}
