//! Secret handling: fingerprints that identify a key in logs and replies without revealing it, and the
//! scrubber that removes the exact value of every loaded secret (raw or percent-encoded) from any text —
//! every log line (see [`crate::logging`]) and every error shown to a user — whatever an upstream echoes.
//! Keys and tokens themselves stay `secrecy::SecretString` from the moment they are read.

mod stream;

pub use stream::{scrub_reply, Cleaned, ReplyScrubber};

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::RwLock;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// What a scrubbed secret is replaced with.
pub const REDACTED: &str = "[redacted]";
/// Secrets shorter than this are not scrubbed: no real key or token is (Telegram's are ~46 characters,
/// OpenRouter's ~73), and scrubbing a two-letter test value would mangle ordinary words in every line.
const MIN_SCRUBBED_LEN: usize = 8;

/// Every form of every installed secret, longest first (so a raw value inside a longer form goes with it).
static NEEDLES: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// A short, stable, non-reversible name for a secret: `fp:` and the first 8 hex digits of its SHA-256.
/// Never the key's prefix (every OpenRouter key starts `sk-or-v1-`) and never enough to guess it.
pub fn fingerprint(secret: &SecretString) -> String {
    fingerprint_str(secret.expose_secret())
}

/// [`fingerprint`] of a plain string, for code that only briefly holds an exposed secret.
pub fn fingerprint_str(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let hex = digest
        .iter()
        .take(4)
        .fold(String::with_capacity(8), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        });
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

/// Registers `secrets` with the scrubber: from now on [`scrub`] removes their exact values and their
/// percent-encoded forms (as an upstream echoing a URL or a form body would show them). Called when
/// secrets are loaded; installing a value twice is harmless.
pub fn install<'a>(secrets: impl IntoIterator<Item = &'a SecretString>) {
    let mut needles = NEEDLES
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for secret in secrets {
        let value = secret.expose_secret();
        if value.len() < MIN_SCRUBBED_LEN {
            continue;
        }
        for form in encoded_forms(value) {
            if !needles.contains(&form) {
                needles.push(form);
            }
        }
    }
    needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
}

/// `text` with every installed secret (in any of its forms) replaced by [`REDACTED`]. Borrowed, and
/// cheap, when there is nothing to remove.
pub fn scrub(text: &str) -> Cow<'_, str> {
    scrub_with(&needles(), text)
}

/// The installed needles, longest first.
fn needles() -> std::sync::RwLockReadGuard<'static, Vec<String>> {
    NEEDLES
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// [`scrub`] with `needles` already read.
fn scrub_with<'a>(needles: &[String], text: &'a str) -> Cow<'a, str> {
    let mut out = Cow::Borrowed(text);
    for needle in needles {
        if out.contains(needle.as_str()) {
            out = Cow::Owned(out.replace(needle.as_str(), REDACTED));
        }
    }
    out
}

/// The raw value and how URL encoders write it: reserved characters encoded (`:` → `%3A`, as in a bot
/// URL), or every byte encoded; each with upper- and lower-case hex digits.
fn encoded_forms(value: &str) -> Vec<String> {
    let reserved = |b: u8| !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    let mut forms = vec![value.to_owned()];
    for encode_all in [false, true] {
        for upper in [true, false] {
            let mut form = String::with_capacity(value.len() * 3);
            for b in value.bytes() {
                if encode_all || reserved(b) {
                    let _ = if upper {
                        write!(form, "%{b:02X}")
                    } else {
                        write!(form, "%{b:02x}")
                    };
                } else {
                    form.push(char::from(b));
                }
            }
            if !forms.contains(&form) {
                forms.push(form);
            }
        }
    }
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_secrets_are_scrubbed_raw_and_percent_encoded_and_others_left_alone() {
        let token = SecretString::from("123456:SCRUB-test-token-Zq");
        install([&token, &SecretString::from("short")]);
        let line = "GET /bot123456:SCRUB-test-token-Zq/x and /bot123456%3ASCRUB-test-token-Zq/y \
                    and %31%32%33%34%35%36%3a%53%43%52%55%42%2d%74%65%73%74%2d%74%6f%6b%65%6e%2d%5a%71";
        let scrubbed = scrub(line);
        assert!(!scrubbed.contains("SCRUB"), "{scrubbed}");
        assert!(!scrubbed.contains("%53%43"), "{scrubbed}");
        assert_eq!(scrubbed.matches(REDACTED).count(), 3, "{scrubbed}");
        assert!(matches!(
            scrub("short words stay"),
            Cow::Borrowed("short words stay")
        ));
    }

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
