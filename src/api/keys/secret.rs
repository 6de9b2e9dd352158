//! Client key secrets: the printed form `sb-<id>-<secret>`, reading one from a request's headers, the
//! stored SHA-256 digest of the secret and its constant-time comparison. A secret lives only in a
//! [`Presented`] (whose `Debug` prints the public id alone) and in the one line `keys create` prints.

use std::fmt;
use std::io::Read;

use axum::http::HeaderMap;
use sha2::{Digest as _, Sha256};

/// Bytes of randomness in a key's public id: 48 bits keep ids short to type and unique among the few
/// hundred keys one operator hands out (a collision is checked at creation anyway).
const ID_BYTES: usize = 6;
/// Bytes of randomness in a secret: 256 bits, so a single unsalted SHA-256 is a safe stored form (no
/// guessing or precomputation reaches that space; slow password hashes are for low-entropy secrets).
const SECRET_BYTES: usize = 32;
/// The prefix every key starts with, so a leaked key is recognisable (secret scanners key on prefixes).
pub const PREFIX: &str = "sb-";

/// The SHA-256 digest of a secret: what the store keeps instead of the secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecretDigest(pub [u8; 32]);

impl SecretDigest {
    /// The digest of `secret`.
    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    /// Compares in time independent of where the digests differ: the only branch is on the final
    /// accumulated value, so a timing attacker learns nothing about how many bytes matched.
    pub fn matches(&self, other: &Self) -> bool {
        let diff = self
            .0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }

    /// Lowercase hex, for the store.
    pub fn to_hex(self) -> String {
        hex(&self.0)
    }

    /// From lowercase hex (the store's form).
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(out))
    }
}

impl fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretDigest(<redacted>)")
    }
}

/// An `Authorization` header that holds no well-formed switchboard key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the Authorization header holds no switchboard key (Bearer sb-…)")]
pub struct Malformed;

/// A key as a client presented it: its public id and its secret.
pub struct Presented {
    /// The public id (safe to log).
    pub id: String,
    secret: String,
}

impl Presented {
    /// Parses `sb-<id>-<secret>`; `None` for anything else.
    pub fn parse(token: &str) -> Option<Self> {
        let rest = token.strip_prefix(PREFIX)?;
        let (id, secret) = rest.split_once('-')?;
        let hexish =
            |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
        (hexish(id, 2 * ID_BYTES) && hexish(secret, 2 * SECRET_BYTES)).then(|| Self {
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// The key in a request: `Authorization: Bearer <key>` (the OpenAI SDKs, and the Ollama clients
    /// with `OLLAMA_API_KEY`). [`Malformed`] when a header is there but holds no well-formed key.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, Malformed> {
        let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
            return Ok(None);
        };
        let value = value.to_str().map_err(|_| Malformed)?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Malformed);
        }
        Self::parse(token.trim()).map(Some).ok_or(Malformed)
    }

    /// The digest of the secret, to compare with the stored one.
    pub fn digest(&self) -> SecretDigest {
        SecretDigest::of(&self.secret)
    }
}

impl fmt::Debug for Presented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Presented")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A freshly made key: the id, the full key to print once, and the digest to store.
pub struct Minted {
    /// The public id.
    pub id: String,
    /// `sb-<id>-<secret>`, printed once and never stored.
    pub key: secrecy::SecretString,
    /// What the store keeps.
    pub digest: SecretDigest,
}

impl fmt::Debug for Minted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Minted")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Makes a new key from the operating system's random source (`fastrand` is not a cryptographic
/// generator, so it is not used here).
pub fn mint() -> std::io::Result<Minted> {
    let mut bytes = [0u8; ID_BYTES + SECRET_BYTES];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let id = hex(&bytes[..ID_BYTES]);
    let secret = hex(&bytes[ID_BYTES..]);
    let digest = SecretDigest::of(&secret);
    let key = secrecy::SecretString::from(format!("{PREFIX}{id}-{secret}"));
    Ok(Minted { id, key, digest })
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn a_minted_key_parses_back_and_matches_only_its_digest() {
        let minted = mint().unwrap();
        let presented = Presented::parse(minted.key.expose_secret()).unwrap();
        assert_eq!(presented.id, minted.id);
        assert!(presented.digest().matches(&minted.digest));
        let other = mint().unwrap();
        assert!(!presented.digest().matches(&other.digest));
        assert_eq!(
            SecretDigest::from_hex(&minted.digest.to_hex()),
            Some(minted.digest)
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let minted = mint().unwrap();
        let secret = minted
            .key
            .expose_secret()
            .rsplit('-')
            .next()
            .unwrap()
            .to_owned();
        let presented = Presented::parse(minted.key.expose_secret()).unwrap();
        for text in [
            format!("{minted:?}"),
            format!("{presented:?}"),
            format!("{:?}", minted.digest),
        ] {
            assert!(!text.contains(&secret), "{text}");
            assert!(!text.contains(&minted.digest.to_hex()), "{text}");
        }
    }

    #[test]
    fn bearer_headers_are_read_and_malformed_ones_refused() {
        let minted = mint().unwrap();
        let mut h = HeaderMap::new();
        assert!(matches!(Presented::from_headers(&h), Ok(None)));
        h.insert(
            "authorization",
            format!("Bearer {}", minted.key.expose_secret())
                .parse()
                .unwrap(),
        );
        assert_eq!(Presented::from_headers(&h).unwrap().unwrap().id, minted.id);
        h.insert("authorization", "Bearer sk-something".parse().unwrap());
        assert!(Presented::from_headers(&h).is_err());
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert!(Presented::from_headers(&h).is_err());
    }
}
