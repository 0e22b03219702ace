//! Hermes's own settings under a home: `.env` (read with `dotenvy`, which
//! follows python-dotenv, the reader Hermes uses) and `config.yaml` (read
//! with `yaml_serde`). Read once; `send` takes its endpoint and key from
//! them and the redactor the exact values of every credential setting.
//!
//! Each file is read only if it is a regular, small file (a FIFO or a link
//! to a device must not hang or flood a run). A file that cannot be read or
//! parsed is a problem, named with its path; the other file still counts.

use std::path::{Path, PathBuf};

use yaml_serde::Value as Yaml;

/// What `.env` and `config.yaml` hold.
#[derive(Debug, Default)]
pub struct HermesSettings {
    /// `.env` entries in file order (a later one wins).
    pub dotenv: Vec<(String, String)>,
    /// `config.yaml`'s document, when there is one.
    pub config: Option<Yaml>,
    /// Files that could not be read or parsed: the path and why.
    pub problems: Vec<(PathBuf, String)>,
}

impl HermesSettings {
    /// Reads the settings of the Hermes home `dir`; missing files are empty.
    pub fn read(dir: &Path) -> HermesSettings {
        let mut out = HermesSettings::default();
        let env_path = dir.join(".env");
        if let Some(bytes) = out.file(&env_path) {
            out.dotenv = dotenvy::from_read_iter(bytes.as_slice())
                .filter_map(Result::ok)
                .collect();
        }
        let yaml_path = dir.join("config.yaml");
        if let Some(bytes) = out.file(&yaml_path) {
            match yaml_serde::from_slice::<Yaml>(&bytes) {
                Ok(doc) => out.config = Some(doc),
                Err(e) => out
                    .problems
                    .push((yaml_path, format!("not valid YAML ({e})"))),
            }
        }
        out
    }

    fn file(&mut self, path: &Path) -> Option<Vec<u8>> {
        match crate::safe_io::read_optional(path, crate::safe_io::MAX_SETTINGS_BYTES) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.problems.push((path.to_path_buf(), e.to_string()));
                None
            }
        }
    }

    /// The last `.env` value of `name`.
    pub fn env(&self, name: &str) -> Option<&str> {
        self.dotenv
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The scalar at `path` (nested mapping keys) in `config.yaml`, as text,
    /// with `${VAR}` expanded as Hermes does; `None` when the path is absent,
    /// null, or does not end at a scalar.
    pub fn config_value(&self, path: &[&str]) -> Option<String> {
        let mut node = self.config.as_ref()?;
        for key in path {
            node = node.as_mapping()?.get(*key)?;
        }
        scalar(node).map(|v| self.expand_vars(&v))
    }

    /// Every `name = value` setting: the `.env` entries, then each key of
    /// any mapping in `config.yaml` (at any depth, in lists too) whose value
    /// is a scalar or a list of scalars (`tokens: [a, b]` gives two
    /// `tokens` settings). A config value is given both as written and
    /// with `${VAR}` expanded, so `api_key: ${ANY_NAME}` names its
    /// variable's value a credential whatever that variable is called.
    pub fn all_settings(&self) -> Vec<(String, String)> {
        let mut out = self.dotenv.clone();
        if let Some(doc) = &self.config {
            let mut yaml = Vec::new();
            yaml_settings(doc, &mut yaml);
            for (name, value) in yaml {
                let expanded = self.expand_vars(&value);
                if expanded != value {
                    out.push((name.clone(), expanded));
                }
                out.push((name, value));
            }
        }
        out
    }

    /// `${VAR}` in config values, as Hermes expands them (environment
    /// first, then `.env`); unknown references stay verbatim.
    fn expand_vars(&self, value: &str) -> String {
        let mut out = String::new();
        let mut rest = value;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                return out;
            };
            let name = &after[..end];
            match std::env::var(name)
                .ok()
                .or_else(|| self.env(name).map(str::to_owned))
            {
                Some(v) => out.push_str(&v),
                None => out.push_str(&rest[start..start + 2 + end + 1]),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }
}

/// A scalar as text; null and collections are `None`.
fn scalar(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        Yaml::Tagged(t) => scalar(&t.value),
        Yaml::Null | Yaml::Sequence(_) | Yaml::Mapping(_) => None,
    }
}

fn yaml_settings(v: &Yaml, out: &mut Vec<(String, String)>) {
    match v {
        Yaml::Mapping(map) => {
            for (k, v) in map {
                let Some(name) = scalar(k) else {
                    yaml_settings(v, out);
                    continue;
                };
                if let Some(value) = scalar(v) {
                    out.push((name, value));
                    continue;
                }
                if let Yaml::Sequence(items) = v {
                    for value in items.iter().filter_map(scalar) {
                        out.push((name.clone(), value));
                    }
                }
                yaml_settings(v, out);
            }
        }
        Yaml::Sequence(items) => items.iter().for_each(|i| yaml_settings(i, out)),
        Yaml::Tagged(t) => yaml_settings(&t.value, out),
        _ => {}
    }
}

/// A scratch Hermes home holding these files (for tests).
#[cfg(test)]
pub fn scratch_home(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

#[cfg(test)]
mod tests {
    use super::scratch_home as home;
    use super::*;

    const PATH: [&str; 4] = ["platforms", "api_server", "extra", "port"];

    #[test]
    fn config_values_at_a_path() {
        let yaml = "\
# config
model:
  base_url: http://127.0.0.1:18080/v1  # the fake
  extra:
    port: 1
platforms:
  telegram:
    extra:
      port: 2
  api_server:
    extra:
      host: '0.0.0.0'
      port: 9000   # comment
      key: \"ci-test-key-0123456789abcdef\"
      cors_origins:
        - http://a
";
        let dir = home(&[("config.yaml", yaml)]);
        let s = HermesSettings::read(dir.path());
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        assert_eq!(s.config_value(&PATH).as_deref(), Some("9000"));
        let extra = |leaf| s.config_value(&["platforms", "api_server", "extra", leaf]);
        assert_eq!(extra("host").as_deref(), Some("0.0.0.0"));
        assert_eq!(
            extra("key").as_deref(),
            Some("ci-test-key-0123456789abcdef")
        );
        assert_eq!(extra("nope"), None);
        assert_eq!(extra("cors_origins"), None);
        assert_eq!(
            s.config_value(&["model", "base_url"]).as_deref(),
            Some("http://127.0.0.1:18080/v1")
        );
    }

    #[test]
    fn other_yaml_shapes() {
        let read = |yaml: &str| HermesSettings::read(home(&[("config.yaml", yaml)]).path());
        let flow = read(
            "platforms:\n  api_server: {enabled: true, extra: {host: \"::\", port: 8700, key: 'a#b'}}\n",
        );
        assert_eq!(flow.config_value(&PATH).as_deref(), Some("8700"));
        assert_eq!(
            flow.config_value(&["platforms", "api_server", "extra", "key"])
                .as_deref(),
            Some("a#b")
        );
        let quoted = read(
            "---\n\"platforms\":\n    'api_server':\n        extra:\n            port: \"8643\"\n",
        );
        assert_eq!(quoted.config_value(&PATH).as_deref(), Some("8643"));
        assert_eq!(
            read("platforms:\n  api_server:\n    extra:\n      port: ~\n").config_value(&PATH),
            None
        );
        let block = read(
            "platforms:\n  api_server:\n    extra:\n      key: |\n        port: 1\n      port: 5\n",
        );
        assert_eq!(block.config_value(&PATH).as_deref(), Some("5"));
        // A key of the same name at a shallower level does not match.
        let shallow = read("platforms:\n  port: 1\n  api_server:\n    port: 2\n");
        assert_eq!(shallow.config_value(&PATH), None);
        let broken = read("platforms: [unclosed\n");
        assert!(broken.config.is_none());
        assert!(
            broken.problems[0].1.contains("YAML"),
            "{:?}",
            broken.problems
        );
    }

    #[test]
    fn dotenv_forms() {
        let text = "\
# comment
export API_SERVER_KEY=abc # trailing
API_SERVER_HOST=\"127.0.0.2\"
API_SERVER_PORT='8650'
EMPTY=
HASH=a#b
MULTI=\"line1
line2\"
not a line
LAST=1
LAST=2
";
        let s = HermesSettings::read(home(&[(".env", text)]).path());
        assert_eq!(s.env("API_SERVER_KEY"), Some("abc"));
        assert_eq!(s.env("API_SERVER_HOST"), Some("127.0.0.2"));
        assert_eq!(s.env("API_SERVER_PORT"), Some("8650"));
        assert_eq!(s.env("EMPTY"), Some(""));
        assert_eq!(s.env("HASH"), Some("a#b"));
        assert_eq!(s.env("MULTI"), Some("line1\nline2"));
        assert_eq!(s.env("LAST"), Some("2"));
    }

    #[test]
    fn every_setting_at_any_depth() {
        let yaml =
            "a:\n  api_key: k1\n  list:\n    - token: t1\n    - plain\nb: {secret: s1}\nn: 5\n";
        let s = HermesSettings::read(home(&[("config.yaml", yaml), (".env", "X_KEY=e1\n")]).path());
        let all = s.all_settings();
        for pair in [
            ("X_KEY", "e1"),
            ("api_key", "k1"),
            ("token", "t1"),
            ("secret", "s1"),
            ("n", "5"),
        ] {
            assert!(
                all.contains(&(pair.0.to_string(), pair.1.to_string())),
                "{pair:?} in {all:?}"
            );
        }
    }

    #[test]
    fn config_values_expand_variables_from_dotenv() {
        let yaml = "platforms:\n  api_server:\n    extra:\n      key: ${HH_TEST_UNSET_VAR_X}\n      port: ${HH_PORT_FROM_DOTENV}\n";
        let dir = home(&[
            ("config.yaml", yaml),
            (".env", "HH_PORT_FROM_DOTENV=9100\n"),
        ]);
        let s = HermesSettings::read(dir.path());
        assert_eq!(s.config_value(&PATH).as_deref(), Some("9100"));
        assert_eq!(
            s.config_value(&["platforms", "api_server", "extra", "key"])
                .as_deref(),
            Some("${HH_TEST_UNSET_VAR_X}")
        );
    }
}
