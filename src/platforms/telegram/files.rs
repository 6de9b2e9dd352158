//! Telegram photos and documents: which of a photo's sizes to take (the largest under the image cap),
//! documents as images, text files or neither, and the media source that fetches a `file_id` through
//! `getFile` and the Bot API's file URL (`{api_url}/file/bot<token>/<file_path>`).

use futures_util::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use teloxide::types::Message;

use super::api::Api;
use crate::domain::{Attachment, AttachmentKind};
use crate::media::download::Downloader;
use crate::media::text::kind_of;
use crate::media::{Limits, MediaError, MediaSource};

/// The attachments of `msg`: its photo (the largest size whose announced size fits `max_image_bytes`,
/// else the smallest, which the core then refuses as too large) or its document.
pub fn attachments(msg: &Message, max_image_bytes: u64) -> Vec<Attachment> {
    if let Some(sizes) = msg.photo() {
        let known = |s: &teloxide::types::PhotoSize| {
            (s.file.size != u32::MAX).then_some(u64::from(s.file.size))
        };
        let area = |s: &&teloxide::types::PhotoSize| u64::from(s.width) * u64::from(s.height);
        let fitting = sizes
            .iter()
            .filter(|s| known(s).is_none_or(|n| n <= max_image_bytes))
            .max_by_key(area);
        let Some(chosen) = fitting.or_else(|| sizes.iter().min_by_key(area)) else {
            return Vec::new();
        };
        return vec![Attachment {
            kind: AttachmentKind::Image,
            source: chosen.file.id.0.clone(),
            name: None,
            // Telegram re-encodes every photo as JPEG.
            media_type: Some("image/jpeg".into()),
            size: known(chosen),
        }];
    }
    let Some(doc) = msg.document() else {
        return Vec::new();
    };
    let media_type = doc.mime_type.as_ref().map(|m| m.essence_str().to_owned());
    vec![Attachment {
        kind: kind_of(doc.file_name.as_deref(), media_type.as_deref()),
        source: doc.file.id.0.clone(),
        name: doc.file_name.clone(),
        media_type,
        size: (doc.file.size != u32::MAX).then_some(u64::from(doc.file.size)),
    }]
}

/// Whether `msg` carries something [`attachments`] takes (a photo or a document).
pub fn has_media(msg: &Message) -> bool {
    msg.photo().is_some() || msg.document().is_some()
}

/// Fetches Telegram files by `file_id`. Its `Debug` hides the token.
pub struct TelegramFiles {
    api: Api,
    token: SecretString,
    api_url: String,
    downloader: Downloader,
}

impl TelegramFiles {
    /// A source asking `api` for file paths and downloading from `api_url` with `token`.
    pub fn new(api: Api, token: SecretString, api_url: &str, downloader: Downloader) -> Self {
        Self {
            api,
            token,
            api_url: api_url.trim_end_matches('/').to_owned(),
            downloader,
        }
    }
}

impl std::fmt::Debug for TelegramFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TelegramFiles(<token hidden>)")
    }
}

impl MediaSource for TelegramFiles {
    fn fetch<'a>(
        &'a self,
        source: &'a str,
        limits: Limits,
    ) -> BoxFuture<'a, Result<Vec<u8>, MediaError>> {
        Box::pin(async move {
            let (path, size) = tokio::time::timeout(limits.total, self.api.get_file(source))
                .await
                .map_err(|_| MediaError::Stalled)?
                .map_err(|e| MediaError::Failed(e.to_string()))?;
            if size.is_some_and(|n| n > limits.max_bytes) {
                return Err(MediaError::TooLarge {
                    limit: limits.max_bytes,
                });
            }
            let url = format!(
                "{}/file/bot{}/{}",
                self.api_url,
                self.token.expose_secret(),
                path.trim_start_matches('/')
            );
            self.downloader.get(&url, limits).await
        })
    }
}
