//! Reading secrets: bot tokens and API keys, from `NAME`, `NAME_FILE` or `$CREDENTIALS_DIRECTORY/NAME`
//! (systemd `LoadCredential=`), held as `SecretString` from the first moment. The seeds' variable names
//! work as they are: `OPENROUTER_API_KEY`, `OPENROUTER_API_KEY_1..N`, `OLLAMA_API_KEY`, `OLLAMA_API_KEY_2..N`,
//! `DISCORD_BOT_TOKEN`, `TELEGRAM_BOT_TOKEN`.

use std::path::PathBuf;

use secrecy::SecretString;

use super::{ConfigError, Env};
use crate::secrets::NamedSecret;

/// The variable name (without a number) for OpenRouter keys.
pub const OPENROUTER_KEY_VAR: &str = "OPENROUTER_API_KEY";
/// The variable name (without a number) for Ollama Cloud keys.
pub const OLLAMA_KEY_VAR: &str = "OLLAMA_API_KEY";
/// The Telegram bot token variable.
pub const TELEGRAM_TOKEN_VAR: &str = "TELEGRAM_BOT_TOKEN";
/// The Discord bot token variable.
pub const DISCORD_TOKEN_VAR: &str = "DISCORD_BOT_TOKEN";
/// Numbered keys are looked for by name, `_1` … `_32`, rather than by listing the environment, so that
/// `NAME_N`, `NAME_N_FILE` and `$CREDENTIALS_DIRECTORY/NAME_N` are all found the same way. 32 accounts is
/// far past any real deployment; a key numbered outside the range is an error, not silently unused.
pub const MAX_NUMBERED_KEYS: u32 = 32;

/// Every secret switchboard uses. Has no `Debug` that shows a value.
#[derive(Clone, Default)]
pub struct Secrets {
    /// OpenRouter keys in order: `OPENROUTER_API_KEY`, then `_1`, `_2`, …
    pub openrouter_keys: Vec<NamedSecret>,
    /// Ollama Cloud keys in order: `OLLAMA_API_KEY`, then `_2`, `_3`, … (`_1` is accepted too).
    pub ollama_keys: Vec<NamedSecret>,
    /// The Telegram bot token, if Telegram is configured.
    pub telegram_token: Option<SecretString>,
    /// The Discord bot token, if Discord is configured.
    pub discord_token: Option<SecretString>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("openrouter_keys", &self.openrouter_keys)
            .field("ollama_keys", &self.ollama_keys)
            .field(
                "telegram_token",
                &self.telegram_token.as_ref().map(|_| "<set>"),
            )
            .field(
                "discord_token",
                &self.discord_token.as_ref().map(|_| "<set>"),
            )
            .finish()
    }
}

impl Secrets {
    /// Reads every secret from `env` (and the files it points at), and registers each with the
    /// scrubber ([`crate::secrets::install`]) so no log line or reply can show it, whatever echoes it.
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        let secrets = Self {
            openrouter_keys: numbered(env, OPENROUTER_KEY_VAR)?,
            ollama_keys: numbered(env, OLLAMA_KEY_VAR)?,
            telegram_token: read(env, TELEGRAM_TOKEN_VAR)?,
            discord_token: read_cleaned(env, DISCORD_TOKEN_VAR, strip_bot_prefix)?,
        };
        crate::secrets::install(secrets.values());
        Ok(secrets)
    }

    /// Every secret held.
    pub fn values(&self) -> impl Iterator<Item = &SecretString> {
        self.openrouter_keys
            .iter()
            .chain(&self.ollama_keys)
            .map(|k| &k.value)
            .chain(&self.telegram_token)
            .chain(&self.discord_token)
    }
}

fn numbered(env: &Env, base: &str) -> Result<Vec<NamedSecret>, ConfigError> {
    check_numbering(env, base)?;
    let mut out = Vec::new();
    let names = std::iter::once(base.to_string())
        .chain((1..=MAX_NUMBERED_KEYS).map(|i| format!("{base}_{i}")));
    for name in names {
        if let Some(value) = read(env, &name)? {
            out.push(NamedSecret { name, value });
        }
    }
    Ok(out)
}

/// Refuses a numbered key the probe in [`numbered`] would never read: `_0`, `_07`, or above
/// [`MAX_NUMBERED_KEYS`], whether a variable (or its `_FILE`) or a file in `$CREDENTIALS_DIRECTORY`.
fn check_numbering(env: &Env, base: &str) -> Result<(), ConfigError> {
    let prefix = format!("{base}_");
    let mut names: Vec<String> = env.names().map(str::to_owned).collect();
    if let Some(dir) = env.get("CREDENTIALS_DIRECTORY") {
        // An unreadable directory is reported by `read` when a credential is looked up in it.
        if let Ok(entries) = std::fs::read_dir(dir) {
            names.extend(
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().to_ascii_uppercase()),
            );
        }
    }
    for name in names {
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let number = rest.strip_suffix("_FILE").unwrap_or(rest);
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let in_range = number
            .parse::<u32>()
            .is_ok_and(|n| (1..=MAX_NUMBERED_KEYS).contains(&n) && n.to_string() == number);
        if !in_range {
            return Err(ConfigError::new(
                &name,
                format!(
                    "is numbered outside {base}_1 … {base}_{MAX_NUMBERED_KEYS} and would never be read"
                ),
                format!(
                    "renumber it within 1..={MAX_NUMBERED_KEYS} without leading zeros (numbers may skip)"
                ),
            ));
        }
    }
    Ok(())
}

/// A Discord token pasted as `Bot <token>` (the form of the `Authorization` header, which the developer
/// portal and many guides show) is the token with its scheme: drop the scheme, serenity adds it itself.
/// Case-insensitive, as HTTP auth schemes are.
fn strip_bot_prefix(value: &str) -> &str {
    match value.get(..4) {
        Some(scheme) if scheme.eq_ignore_ascii_case("bot ") => value[4..].trim_start(),
        _ => value,
    }
}

/// Reads one secret: `NAME`, else the file named by `NAME_FILE`, else `$CREDENTIALS_DIRECTORY/NAME` (or its
/// lowercase form). Surrounding whitespace is trimmed (files usually end with a newline).
pub fn read(env: &Env, name: &str) -> Result<Option<SecretString>, ConfigError> {
    read_cleaned(env, name, |v| v)
}

/// [`read`], with `clean` applied to the trimmed value before it is checked.
fn read_cleaned(
    env: &Env,
    name: &str,
    clean: fn(&str) -> &str,
) -> Result<Option<SecretString>, ConfigError> {
    let non_empty = |label: &str, value: &str| non_empty(label, clean(value.trim()).to_owned());
    if let Some(value) = env.get(name) {
        return non_empty(name, value).map(Some);
    }
    let file_var = format!("{name}_FILE");
    if let Some(path) = env.get(&file_var) {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                &file_var,
                format!("cannot read {path} ({e})"),
                "point it at a readable file that holds only the secret",
            )
        })?;
        return non_empty(&file_var, &text).map(Some);
    }
    if let Some(dir) = env.get("CREDENTIALS_DIRECTORY") {
        for candidate in [name.to_string(), name.to_ascii_lowercase()] {
            let path = PathBuf::from(dir).join(&candidate);
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    return non_empty(&format!("credential {candidate}"), &text).map(Some)
                }
                // Only a missing file means "not configured"; anything else (permissions, a
                // directory, bad UTF-8) is a credential that exists and cannot be used.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(ConfigError::new(
                        path.display().to_string(),
                        format!("the credential {candidate} cannot be read ({e})"),
                        "make it a readable file holding only the secret (LoadCredential= in the unit), or remove it",
                    ))
                }
            }
        }
    }
    Ok(None)
}

fn non_empty(name: &str, value: String) -> Result<SecretString, ConfigError> {
    if value.is_empty() {
        return Err(ConfigError::new(
            name,
            "is empty",
            "put the secret in it, or unset it",
        ));
    }
    if value.chars().any(char::is_whitespace) {
        return Err(ConfigError::new(
            name,
            "contains whitespace inside the secret",
            "copy the key again; it is a single word",
        ));
    }
    Ok(SecretString::from(value))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn seed_variable_names_work_in_order() {
        let env = Env::from_pairs([
            ("OPENROUTER_API_KEY_2", "k2"),
            ("OPENROUTER_API_KEY_1", "k1"),
            ("OLLAMA_API_KEY", "o1"),
            ("OLLAMA_API_KEY_2", "o2"),
            ("TELEGRAM_BOT_TOKEN", "123:abc"),
        ]);
        let s = Secrets::load(&env).unwrap();
        let names: Vec<_> = s.openrouter_keys.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["OPENROUTER_API_KEY_1", "OPENROUTER_API_KEY_2"]);
        assert_eq!(s.ollama_keys.len(), 2);
        assert_eq!(s.telegram_token.unwrap().expose_secret(), "123:abc");
        assert!(s.discord_token.is_none());
    }

    #[test]
    fn file_and_credentials_directory_are_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "from-file\n").unwrap();
        std::fs::write(dir.path().join("discord_bot_token"), "from-creds\n").unwrap();
        let env = Env::from_pairs([
            (
                "TELEGRAM_BOT_TOKEN_FILE",
                dir.path().join("token").display().to_string(),
            ),
            ("CREDENTIALS_DIRECTORY", dir.path().display().to_string()),
        ]);
        let s = Secrets::load(&env).unwrap();
        assert_eq!(s.telegram_token.unwrap().expose_secret(), "from-file");
        assert_eq!(s.discord_token.unwrap().expose_secret(), "from-creds");
        assert!(!format!("{:?}", Secrets::load(&env).unwrap()).contains("from-"));
    }

    #[test]
    fn an_unreadable_credential_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the credential should be: exists, but cannot be read as a file (this holds
        // for root too, unlike a permissions test).
        std::fs::create_dir(dir.path().join("TELEGRAM_BOT_TOKEN")).unwrap();
        let env = Env::from_pairs([("CREDENTIALS_DIRECTORY", dir.path().display().to_string())]);
        let err = Secrets::load(&env).unwrap_err();
        assert!(err.key.ends_with("TELEGRAM_BOT_TOKEN"), "{err}");
        assert!(
            err.key.starts_with(&dir.path().display().to_string()),
            "{err}"
        );
        // An absent one is simply not configured.
        std::fs::remove_dir(dir.path().join("TELEGRAM_BOT_TOKEN")).unwrap();
        assert!(Secrets::load(&env).unwrap().telegram_token.is_none());
    }

    #[test]
    fn a_key_numbered_outside_the_probed_range_is_an_error() {
        for name in [
            "OPENROUTER_API_KEY_33",
            "OPENROUTER_API_KEY_0",
            "OPENROUTER_API_KEY_07",
            "OLLAMA_API_KEY_40_FILE",
        ] {
            let env = Env::from_pairs([("OPENROUTER_API_KEY_1", "k1"), (name, "x")]);
            let err = Secrets::load(&env).unwrap_err();
            assert_eq!(err.key, name);
            assert!(err.problem.contains("never be read"), "{err}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("openrouter_api_key_99"), "k\n").unwrap();
        let env = Env::from_pairs([("CREDENTIALS_DIRECTORY", dir.path().display().to_string())]);
        assert_eq!(
            Secrets::load(&env).unwrap_err().key,
            "OPENROUTER_API_KEY_99"
        );
        let env = Env::from_pairs([
            ("OPENROUTER_API_KEY_32", "k32"),
            ("OPENROUTER_API_KEY_FILE_X", "unrelated"),
        ]);
        assert_eq!(Secrets::load(&env).unwrap().openrouter_keys.len(), 1);
    }

    #[test]
    fn a_discord_token_pasted_with_its_bot_scheme_is_accepted_without_it() {
        for pasted in ["Bot abc.def.ghi", "bot  abc.def.ghi\n", "abc.def.ghi"] {
            let env = Env::from_pairs([("DISCORD_BOT_TOKEN", pasted)]);
            let token = Secrets::load(&env).unwrap().discord_token.unwrap();
            assert_eq!(token.expose_secret(), "abc.def.ghi", "{pasted:?}");
        }
        // Only the Discord token has that scheme; whitespace anywhere else is still refused.
        let env = Env::from_pairs([("TELEGRAM_BOT_TOKEN", "Bot 123:abc")]);
        assert!(Secrets::load(&env)
            .unwrap_err()
            .problem
            .contains("whitespace"));
    }

    #[test]
    fn an_unreadable_file_names_the_variable() {
        let env = Env::from_pairs([("DISCORD_BOT_TOKEN_FILE", "/nonexistent/x")]);
        assert_eq!(
            Secrets::load(&env).unwrap_err().key,
            "DISCORD_BOT_TOKEN_FILE"
        );
    }
}
