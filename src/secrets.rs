//! Secret handling: fingerprints that identify a key in logs and replies without revealing it.
//! Keys and tokens themselves stay `secrecy::SecretString` from the moment they are read.

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// A short, stable, non-reversible name for a secret: `fp:` and the first 8 hex digits of its SHA-256.
/// Never the key's prefix (every OpenRouter key starts `sk-or-v1-`) and never enough to guess it.
pub fn fingerprint(secret: &SecretString) -> String {
    fingerprint_str(secret.expose_secret())
}

/// [`fingerprint`] of a plain string, for code that only briefly holds an exposed secret.
pub fn fingerprint_str(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("fp:{hex}")
}

/// A named secret as read from the environment or a credentials file, e.g. `OPENROUTER_API_KEY_2`.
#[derive(Clone)]
pub struct NamedSecret {
    /// Where it came from: the variable or credential name (safe to log).
    pub name: String,
    /// The secret itself.
    pub value: SecretString,
}

impl NamedSecret {
    /// This secret's fingerprint.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.value)
    }
}

impl std::fmt::Debug for NamedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NamedSecret({}, {})", self.name, self.fingerprint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_hides_the_key_and_is_stable() {
        let key = SecretString::from("sk-or-v1-abcdef0123456789");
        let fp = fingerprint(&key);
        assert_eq!(
            fp,
            fingerprint(&SecretString::from("sk-or-v1-abcdef0123456789"))
        );
        assert!(fp.starts_with("fp:") && fp.len() == 11);
        assert!(!fp.contains("sk-or") && !fp.contains("6789"));
        let named = NamedSecret {
            name: "OPENROUTER_API_KEY_1".into(),
            value: key,
        };
        assert!(!format!("{named:?}").contains("abcdef"));
    }
}
