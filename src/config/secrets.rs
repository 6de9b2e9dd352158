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
/// Numbered keys are looked for up to this suffix (`_1` … `_32`); more keys than that is a config smell.
const MAX_NUMBERED_KEYS: u32 = 32;

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
    /// Reads every secret from `env` (and the files it points at).
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            openrouter_keys: numbered(env, OPENROUTER_KEY_VAR)?,
            ollama_keys: numbered(env, OLLAMA_KEY_VAR)?,
            telegram_token: read(env, TELEGRAM_TOKEN_VAR)?,
            discord_token: read(env, DISCORD_TOKEN_VAR)?,
        })
    }
}

fn numbered(env: &Env, base: &str) -> Result<Vec<NamedSecret>, ConfigError> {
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

/// Reads one secret: `NAME`, else the file named by `NAME_FILE`, else `$CREDENTIALS_DIRECTORY/NAME` (or its
/// lowercase form). Surrounding whitespace is trimmed (files usually end with a newline).
pub fn read(env: &Env, name: &str) -> Result<Option<SecretString>, ConfigError> {
    if let Some(value) = env.get(name) {
        return non_empty(name, value.trim().to_owned()).map(Some);
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
        return non_empty(&file_var, text.trim().to_owned()).map(Some);
    }
    if let Some(dir) = env.get("CREDENTIALS_DIRECTORY") {
        for candidate in [name.to_string(), name.to_ascii_lowercase()] {
            let path = PathBuf::from(dir).join(&candidate);
            if let Ok(text) = std::fs::read_to_string(&path) {
                return non_empty(&format!("credential {candidate}"), text.trim().to_owned())
                    .map(Some);
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
    fn an_unreadable_file_names_the_variable() {
        let env = Env::from_pairs([("DISCORD_BOT_TOKEN_FILE", "/nonexistent/x")]);
        assert_eq!(
            Secrets::load(&env).unwrap_err().key,
            "DISCORD_BOT_TOKEN_FILE"
        );
    }
}
