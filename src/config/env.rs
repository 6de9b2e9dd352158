//! The process environment as a value (so tests pass their own), and `SWITCHBOARD__A__B=value` overrides.

use std::collections::BTreeMap;

use super::{ConfigError, ENV_PREFIX};

/// A snapshot of environment variables.
#[derive(Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl std::fmt::Debug for Env {
    // Environment values can be secrets: show names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.vars.keys()).finish()
    }
}

impl Env {
    /// The current process environment.
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
        }
    }

    /// An environment with exactly these variables.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// A variable's value, if set and non-empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Sets a variable (for tests and the demo).
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.vars.insert(name.into(), value.into());
    }

    /// All variable names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.vars.keys().map(String::as_str)
    }
}

/// Which config keys environment variables set, so an error in one can name the variable to fix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// (dotted key, variable name), in the order applied.
    set: Vec<(String, String)>,
}

impl Overrides {
    /// The variable behind an error at `key`: one that set `key` itself, a table holding it, or a key
    /// inside it (an override that created the table `key`).
    pub fn variable_for(&self, key: &str) -> Option<&str> {
        let within = |inner: &str, outer: &str| {
            inner == outer
                || inner
                    .strip_prefix(outer)
                    .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
        };
        self.set
            .iter()
            .find(|(path, _)| within(key, path) || within(path, key))
            .map(|(_, name)| name.as_str())
    }
}

/// Applies every `SWITCHBOARD__SECTION__KEY=value` variable to the parsed TOML and returns which keys
/// they set. The value is read as a TOML value when it parses as one (`20`, `true`, `["a", "b"]`), else
/// as a string.
pub fn apply_overrides(root: &mut toml::Value, env: &Env) -> Result<Overrides, ConfigError> {
    let mut overrides = Overrides::default();
    for name in env.names().filter(|n| n.starts_with(ENV_PREFIX)) {
        let raw = env.get(name).unwrap_or_default();
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::new(
                name,
                "malformed override name",
                "use SWITCHBOARD__SECTION__KEY, e.g. SWITCHBOARD__TELEGRAM__API_URL",
            ));
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
        let mut node = &mut *root;
        for (i, part) in path.iter().enumerate() {
            let table = node.as_table_mut().ok_or_else(|| {
                ConfigError::new(
                    name,
                    format!("`{}` is not a table", path[..i].join(".")),
                    "override a key inside a section",
                )
            })?;
            if i + 1 == path.len() {
                table.insert(part.clone(), value.clone());
                break;
            }
            node = table
                .entry(part.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        }
        overrides.set.push((path.join("."), name.to_owned()));
    }
    Ok(overrides)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    #[test]
    fn overrides_set_typed_values_and_strings() {
        let env = Env::from_pairs([
            ("SWITCHBOARD__CORE__MAX_CONCURRENT_TURNS", "7"),
            ("SWITCHBOARD__CORE__SYSTEM_PROMPT", "Be brief."),
        ]);
        let config = parse("[core]\nmax_concurrent_turns = 3\n", "<test>", &env).unwrap();
        assert_eq!(config.core.max_concurrent_turns, 7);
        assert_eq!(config.core.system_prompt, "Be brief.");
    }

    #[test]
    fn an_unknown_override_names_the_key_and_the_variable() {
        let env = Env::from_pairs([("SWITCHBOARD__CORE__MAX_CONCURENT_TURNS", "4")]);
        let err = parse("", "<test>", &env).unwrap_err();
        assert_eq!(err.key, "core.max_concurent_turns");
        assert!(
            err.problem
                .contains("SWITCHBOARD__CORE__MAX_CONCURENT_TURNS")
                && err.fix.contains("SWITCHBOARD__CORE__MAX_CONCURENT_TURNS"),
            "{err}"
        );
        // A whole unknown section made by an override is blamed on it too.
        let env = Env::from_pairs([("SWITCHBOARD__COER__X", "1")]);
        let err = parse("", "<test>", &env).unwrap_err();
        assert_eq!(err.key, "coer");
        assert!(err.problem.contains("SWITCHBOARD__COER__X"), "{err}");
    }

    #[test]
    fn a_bad_override_value_names_the_variable_and_file_errors_do_not() {
        let env = Env::from_pairs([("SWITCHBOARD__CORE__MAX_CONCURRENT_TURNS", "0")]);
        let err = parse("", "<test>", &env).unwrap_err();
        assert_eq!(err.key, "core.max_concurrent_turns");
        assert!(
            err.problem
                .contains("SWITCHBOARD__CORE__MAX_CONCURRENT_TURNS"),
            "{err}"
        );
        let env = Env::from_pairs([("SWITCHBOARD__CORE__SCOPE", "user")]);
        let err = parse("[core]\nmax_input_chars = \"many\"\n", "<test>", &env).unwrap_err();
        assert_eq!(err.key, "core.max_input_chars");
        assert!(!err.to_string().contains("SWITCHBOARD__"), "{err}");
    }
}
