//! A TOML syntax error phrased for the operator: the file, line and column, and the key on that line
//! when one can be read (`core.max_turns`), instead of the parser's bare message.

use super::ConfigError;

/// What to do about any syntax error.
const FIX: &str = "correct the TOML at that place (compare with config/switchboard.example.toml)";

/// The [`ConfigError`] for a syntax error in `text`, read from `source` (a path or `<defaults>`).
/// Its key is `source:line:column`, or the dotted key on that line when there is one.
pub fn syntax_error(text: &str, source: &str, error: &toml::de::Error) -> ConfigError {
    let message = error.message().trim_end();
    let Some(span) = error.span() else {
        return ConfigError::new(source, format!("not valid TOML: {message}"), FIX);
    };
    let (line, column) = line_column(text, span.start);
    let place = format!("{source}:{line}:{column}");
    let problem = match key_on_line(text, line) {
        Some(key) => {
            format!("not valid TOML at line {line}, column {column} (key `{key}`): {message}")
        }
        None => format!("not valid TOML at line {line}, column {column}: {message}"),
    };
    ConfigError::new(place, problem, FIX)
}

/// The 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The dotted key that line `line` (1-based) assigns, prefixed by the table it is in: `core.max_turns`
/// for `max_turns = …` under `[core]`. `None` when the line assigns nothing readable.
fn key_on_line(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let this = lines.get(line.checked_sub(1)?)?.trim();
    let (key, _) = this.split_once('=')?;
    let key = key.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') || key.starts_with('#') {
        return None;
    }
    let table = lines[..line - 1].iter().rev().find_map(|l| {
        let l = l.trim();
        let header = l.strip_prefix("[[").and_then(|h| h.split("]]").next());
        header
            .or_else(|| l.strip_prefix('[').and_then(|h| h.split(']').next()))
            .map(str::trim)
    });
    Some(match table {
        Some(table) => format!("{table}.{key}"),
        None => key.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, Env};

    #[test]
    fn a_syntax_error_names_its_line_column_and_key() {
        let text = "[core]\nsystem_prompt = \"hi\"\nmax_turns = 12 34\n";
        let err = parse(text, "/etc/switchboard/switchboard.toml", &Env::default()).unwrap_err();
        assert_eq!(err.key, "/etc/switchboard/switchboard.toml:3:16", "{err}");
        assert!(
            err.problem
                .starts_with("not valid TOML at line 3, column 16 (key `core.max_turns`): "),
            "{err}"
        );
        // An unclosed table header: line and column, no key to name.
        let err = parse("a = 1\n[core\n", "x.toml", &Env::default()).unwrap_err();
        assert!(err.key.starts_with("x.toml:2:"), "{err}");
        assert!(
            err.problem.starts_with("not valid TOML at line 2, column "),
            "{err}"
        );
    }
}
