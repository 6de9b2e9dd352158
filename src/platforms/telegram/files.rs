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

#[cfg(test)]
mod tests {
    use serde_json::json;
    use teloxide::types::UserId;

    use super::*;
    use crate::config::telegram::GroupPolicy;
    use crate::platforms::telegram::inbound::{translate, BotIdentity};

    fn message(extra: &serde_json::Value) -> Message {
        let mut v = json!({
            "message_id": 10, "date": 1_700_000_000,
            "chat": {"id": 7, "type": "private", "first_name": "Alice"},
            "from": {"id": 7, "is_bot": false, "first_name": "Alice"},
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    fn photo() -> Message {
        message(&json!({"photo": [
            {"file_id": "s", "file_unique_id": "us", "width": 90, "height": 60, "file_size": 2_000},
            {"file_id": "m", "file_unique_id": "um", "width": 800, "height": 600, "file_size": 90_000},
            {"file_id": "l", "file_unique_id": "ul", "width": 1280, "height": 960, "file_size": 300_000},
        ]}))
    }

    #[test]
    fn a_photo_is_its_largest_size_under_the_cap_else_its_smallest() {
        let got = attachments(&photo(), 1_000_000);
        assert_eq!(got[0].source, "l");
        assert_eq!(got[0].kind, AttachmentKind::Image);
        assert_eq!(attachments(&photo(), 100_000)[0].source, "m");
        let none_fits = attachments(&photo(), 1_000);
        assert_eq!(none_fits[0].source, "s");
        assert_eq!(
            none_fits[0].size,
            Some(2_000),
            "the core refuses it as too large"
        );
    }

    #[test]
    fn a_captionless_photo_is_a_message_for_the_bot_and_documents_say_what_they_are() {
        let me = BotIdentity::new(UserId(42), "sb_bot");
        let inbound = translate(&photo(), &me, GroupPolicy::Mention).unwrap();
        assert_eq!(inbound.text, "");
        let doc = |name: &str, mime: &str| {
            message(&json!({"document": {"file_id": "d", "file_unique_id": "ud",
                "file_name": name, "mime_type": mime, "file_size": 10}}))
        };
        let kind = |m: &Message| attachments(m, 1_000)[0].kind;
        assert_eq!(kind(&doc("scan.png", "image/png")), AttachmentKind::Image);
        assert_eq!(
            kind(&doc("notes.md", "text/markdown")),
            AttachmentKind::Text
        );
        assert_eq!(
            kind(&doc("a.pdf", "application/pdf")),
            AttachmentKind::Other
        );
        assert!(attachments(&message(&json!({"text": "hi"})), 1_000).is_empty());
    }
}
