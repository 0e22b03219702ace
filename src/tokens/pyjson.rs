//! JSON text the way Python's `json.dumps` writes it, which is what chat
//! templates get from transformers' `tojson` filter: `", "` and `": "`
//! separators (`","` between items when indenting), non-ASCII kept as is,
//! keys in their given order unless sorted.

use serde_json::Value;

#[derive(Debug, Clone, Default)]
pub struct PyJson {
    pub indent: Option<String>,
    pub item_sep: Option<String>,
    pub key_sep: Option<String>,
    pub sort_keys: bool,
    /// `ensure_ascii=True`: escape everything beyond ASCII as `\uXXXX`.
    pub ensure_ascii: bool,
}

impl PyJson {
    pub fn dumps(&self, v: &Value) -> String {
        let mut out = String::new();
        self.write(v, 0, &mut out);
        out
    }

    fn item_sep(&self) -> &str {
        match (&self.item_sep, &self.indent) {
            (Some(s), _) => s,
            (None, Some(_)) => ",",
            (None, None) => ", ",
        }
    }

    fn key_sep(&self) -> &str {
        self.key_sep.as_deref().unwrap_or(": ")
    }

    fn newline(&self, depth: usize, out: &mut String) {
        if let Some(ind) = &self.indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(ind);
            }
        }
    }

    fn write(&self, v: &Value, depth: usize, out: &mut String) {
        match v {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => write_number(n, out),
            Value::String(s) => self.write_str(s, out),
            Value::Array(items) => {
                if items.is_empty() {
                    out.push_str("[]");
                    return;
                }
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(self.item_sep());
                    }
                    self.newline(depth + 1, out);
                    self.write(item, depth + 1, out);
                }
                self.newline(depth, out);
                out.push(']');
            }
            Value::Object(map) => {
                if map.is_empty() {
                    out.push_str("{}");
                    return;
                }
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(b.0));
                }
                out.push('{');
                for (i, (k, item)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push_str(self.item_sep());
                    }
                    self.newline(depth + 1, out);
                    self.write_str(k, out);
                    out.push_str(self.key_sep());
                    self.write(item, depth + 1, out);
                }
                self.newline(depth, out);
                out.push('}');
            }
        }
    }

    fn write_str(&self, s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c if self.ensure_ascii && !c.is_ascii() => {
                    let mut buf = [0u16; 2];
                    for unit in c.encode_utf16(&mut buf) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// Integers as they are; floats as Python's `repr` writes them (`1.0`,
/// `1e+16`, `1.5e-07`).
fn write_number(n: &serde_json::Number, out: &mut String) {
    if n.is_f64()
        && let Some(f) = n.as_f64()
    {
        out.push_str(&py_float(f));
    } else {
        out.push_str(&n.to_string());
    }
}

fn py_float(f: f64) -> String {
    if !f.is_finite() {
        return if f.is_nan() {
            "NaN".into()
        } else if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if f == f.trunc() && f.abs() < 1e16 {
        return format!("{f:.1}");
    }
    let abs = f.abs();
    if (1e-4..1e16).contains(&abs) {
        return format!("{f}");
    }
    // Shortest round-trip digits in exponent form, Python style.
    let s = format!("{f:e}");
    let (mantissa, exp) = s.split_once('e').expect("exponent form");
    let exp: i32 = exp.parse().expect("exponent");
    format!(
        "{mantissa}e{}{:02}",
        if exp < 0 { '-' } else { '+' },
        exp.abs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn like_python() {
        let v = json!({"b": [1, 2.0, "é\n\"x\""], "a": {}, "c": null, "d": true});
        assert_eq!(
            PyJson::default().dumps(&v),
            r#"{"b": [1, 2.0, "é\n\"x\""], "a": {}, "c": null, "d": true}"#
        );
        let sorted = PyJson {
            sort_keys: true,
            ..PyJson::default()
        };
        assert_eq!(
            sorted.dumps(&json!({"b": 1, "a": 2})),
            r#"{"a": 2, "b": 1}"#
        );
        let indented = PyJson {
            indent: Some("  ".into()),
            ..PyJson::default()
        };
        assert_eq!(
            indented.dumps(&json!({"a": [1, 2]})),
            "{\n  \"a\": [\n    1,\n    2\n  ]\n}"
        );
        let ascii = PyJson {
            ensure_ascii: true,
            ..PyJson::default()
        };
        assert_eq!(ascii.dumps(&json!("é😀")), r#""\u00e9\ud83d\ude00""#);
        assert_eq!(py_float(1e16), "1e+16");
        assert_eq!(py_float(1.5e-7), "1.5e-07");
        assert_eq!(py_float(0.25), "0.25");
    }
}
