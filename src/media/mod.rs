//! The images and files people send: the [`MediaSource`] seam each platform implements to fetch an
//! attachment's bytes (Telegram `getFile`, a Discord attachment URL, a local path), capped and timed
//! downloads ([`download`]), type sniffing by magic bytes with a corruption check ([`sniff`]), the
//! reference history keeps instead of bytes ([`ImageRef`]) and text files read into a prompt ([`text`]).
//! Knows no platform; the core reaches it only through [`MediaSource`] and the pure checks.

pub mod download;
pub mod local;
pub mod sniff;
pub mod text;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::media::MediaConfig;
use crate::generation::ImageData;

/// What went wrong with an attachment, in the terms a reply names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// Larger than the configured cap (announced or counted while streaming).
    #[error("the file is larger than {limit} bytes")]
    TooLarge {
        /// The cap in force.
        limit: u64,
    },
    /// A type the bot cannot pass on (a PDF, HEIC, a binary file).
    #[error("unsupported type {0}")]
    Unsupported(String),
    /// The bytes claim to be an image but are truncated or malformed.
    #[error("the image is corrupt")]
    Corrupt,
    /// The download failed (connection, HTTP status, the platform refused).
    #[error("the download failed: {0}")]
    Failed(String),
    /// The download stopped sending bytes, or took longer than the total timeout.
    #[error("the download stalled")]
    Stalled,
    /// No media source for this platform is registered (a bug in the wiring).
    #[error("no media source for this platform")]
    NoSource,
}

impl MediaError {
    /// The sentence a user gets for this problem with `what` ("the photo", "`notes.txt`").
    pub fn user_message(&self, what: &str) -> String {
        match self {
            Self::TooLarge { limit } => format!(
                "Sorry — {what} is too large for me (the limit is {}). Please send a smaller one.",
                human_size(*limit)
            ),
            Self::Unsupported(kind) => format!(
                "Sorry — I can't read {what} ({kind}). I can look at JPEG, PNG, GIF and WebP images and read text files (txt, md, code, csv, json)."
            ),
            Self::Corrupt => format!(
                "Sorry — {what} looks damaged; I couldn't read it as an image. Please send it again."
            ),
            Self::Failed(_) | Self::NoSource => {
                format!("Sorry — I couldn't download {what}. Please try sending it again.")
            }
            Self::Stalled => format!(
                "Sorry — downloading {what} took too long and was stopped. Please try sending it again."
            ),
        }
    }
}

/// The download limits of one fetch, from `[media]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes read; one more fails the fetch with [`MediaError::TooLarge`].
    pub max_bytes: u64,
    /// How long to wait for a connection.
    pub connect: Duration,
    /// How long a download may go without a byte.
    pub read: Duration,
    /// How long the whole download may take.
    pub total: Duration,
}

impl Limits {
    /// The limits for images (`text = false`) or text files under `config`.
    pub fn from_config(config: &MediaConfig, text: bool) -> Self {
        Self {
            max_bytes: if text {
                config.max_text_file_bytes
            } else {
                config.max_image_bytes
            },
            connect: Duration::from_secs(config.connect_timeout_secs),
            read: Duration::from_secs(config.read_timeout_secs),
            total: Duration::from_secs(config.total_timeout_secs),
        }
    }
}

/// How a platform fetches an attachment's bytes by its `source` (see
/// [`crate::domain::Attachment::source`]). Implementations enforce `limits` while reading.
pub trait MediaSource: Send + Sync {
    /// The bytes of the file `source`, at most `limits.max_bytes` of them.
    fn fetch<'a>(
        &'a self,
        source: &'a str,
        limits: Limits,
    ) -> BoxFuture<'a, Result<Vec<u8>, MediaError>>;
}

/// A media source shared by the core and an adapter.
pub type SharedSource = Arc<dyn MediaSource>;

/// An image as history keeps it: where to fetch it again and what it was, never its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// The platform's handle to fetch it again (a Telegram `file_id`, a Discord URL, a path).
    pub source: String,
    /// The SHA-256 of the bytes, hex: a re-fetch that returns other bytes is not sent as this image.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type, from its magic bytes.
    pub media_type: String,
}

impl ImageRef {
    /// How the image is named in a model's context once its bytes are no longer sent.
    pub fn summary(&self, name: Option<&str>) -> String {
        format!(
            "[image: {} · {} · {}]",
            name.unwrap_or("photo"),
            self.media_type,
            human_size(self.size)
        )
    }
}

/// Checks `bytes` as an image (magic bytes, structure) and returns its reference and its encoding for
/// a model.
pub fn accept_image(source: &str, bytes: &[u8]) -> Result<(ImageRef, ImageData), MediaError> {
    let media_type = sniff::image_type(bytes)?;
    let reference = ImageRef {
        source: source.to_owned(),
        sha256: sha256_hex(bytes),
        size: bytes.len() as u64,
        media_type: media_type.to_owned(),
    };
    Ok((reference, encode(media_type, bytes)))
}

/// `bytes` as base64 image data of `media_type`.
pub fn encode(media_type: &str, bytes: &[u8]) -> ImageData {
    ImageData {
        media_type: media_type.to_owned(),
        base64: Arc::from(base64::engine::general_purpose::STANDARD.encode(bytes)),
    }
}

/// The lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().fold(String::with_capacity(64), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A size for people: `812 KB`, `3.4 MB`.
pub fn human_size(bytes: u64) -> String {
    const KB: u64 = 1024;
    const MB: u64 = 1024 * 1024;
    if bytes >= MB {
        format!("{:.1} MB", bytes as f64 / MB as f64)
    } else if bytes >= KB {
        format!("{} KB", bytes / KB)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_size(500), "500 bytes");
        assert_eq!(human_size(812 * 1024), "812 KB");
        assert_eq!(human_size(10 * 1024 * 1024), "10.0 MB");
    }

    #[test]
    fn an_accepted_image_keeps_its_hash_size_and_sniffed_type() {
        let png = sniff::tests::tiny_png();
        let (r, data) = accept_image("file-1", &png).unwrap();
        assert_eq!(r.media_type, "image/png");
        assert_eq!(r.size, png.len() as u64);
        assert_eq!(r.sha256.len(), 64);
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(data.base64.as_bytes())
            .unwrap();
        assert_eq!(decoded, png);
        assert_eq!(
            r.summary(None),
            format!("[image: photo · image/png · {} bytes]", png.len())
        );
    }

    #[test]
    fn every_problem_names_itself_to_the_user() {
        let what = "the photo";
        assert!(MediaError::TooLarge {
            limit: 10 * 1024 * 1024
        }
        .user_message(what)
        .contains("too large"));
        assert!(MediaError::Unsupported("application/pdf".into())
            .user_message(what)
            .contains("application/pdf"));
        assert!(MediaError::Corrupt.user_message(what).contains("damaged"));
        assert!(MediaError::Stalled.user_message(what).contains("too long"));
        assert!(MediaError::Failed("x".into())
            .user_message(what)
            .contains("couldn't download"));
    }
}
