//! The core's side of images and files: fetching a turn's attachments through its platform's
//! [`MediaSource`] before anything is stored (a failed download ends in a reply naming the problem and
//! no turn), remembering images by reference per conversation, sending them again with the next
//! `media.resend_turns` turns, and the honest answer when no vision model can look.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Core;
use crate::config::Config;
use crate::domain::{
    Attachment, AttachmentKind, ConversationKey, FailureKind, Inbound, Platform, UserFacingError,
};
use crate::generation::ImageData;
use crate::media::{self, sniff, text, ImageRef, Limits, MediaError, SharedSource};

/// At most this many attachments are taken from one message: each image may be
/// `media.max_image_bytes`, and four bound what one turn holds while covering a few screenshots.
pub const MAX_ATTACHMENTS: usize = 4;
/// Images remembered per conversation for sending again; older ones live on only as `[image: …]` in
/// the history text. A handful covers any `media.resend_turns` a chat uses.
const MAX_REMEMBERED: usize = 8;
/// Where each conversation's recent images are remembered (references only, never bytes).
const NS: &str = "media.recent";

/// What an image turn tells the user when no vision model can answer and paid answers are off.
pub const NO_VISION_PAID_OFF: &str =
    "I can't look at images right now — the free vision models are busy and paid answers are off.";
/// …and when paid answers were allowed but no vision model answered either.
pub const NO_VISION: &str =
    "I can't look at images right now — no vision model is available. Please try again in a little while.";

/// At most this many turns hold images at once (downloading, encoded, or waiting for the model); more
/// wait their turn. A 1 MB photo costs about 2.7 MB while its turn runs (the download, its base64, and
/// the request body that carries it), so 8 keep a burst of photo turns near 22 MB above text-only turns
/// (the 30 MB target of issue 15); a vision answer takes seconds, and 8 in flight already keep a free
/// tier's 20 requests a minute busy.
pub const MAX_IMAGE_TURNS: usize = 8;

/// The platforms' media sources, registered by the adapters, and the image-turn permits.
pub(super) struct Sources {
    sources: std::sync::RwLock<HashMap<Platform, SharedSource>>,
    image_turns: Arc<Semaphore>,
}

impl Default for Sources {
    fn default() -> Self {
        Self {
            sources: std::sync::RwLock::default(),
            image_turns: Arc::new(Semaphore::new(MAX_IMAGE_TURNS)),
        }
    }
}

impl Sources {
    /// One of the [`MAX_IMAGE_TURNS`] permits, waited for; held until the turn ends.
    async fn image_turn(&self) -> Option<OwnedSemaphorePermit> {
        self.image_turns.clone().acquire_owned().await.ok()
    }

    pub(super) fn set(&self, platform: Platform, source: SharedSource) {
        self.sources
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(platform, source);
    }

    fn get(&self, platform: Platform) -> Option<SharedSource> {
        self.sources
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&platform)
            .cloned()
    }
}

/// A turn's attachments, fetched and checked.
#[derive(Default)]
pub(super) struct Gathered {
    /// The new images, with their references.
    pub images: Vec<(ImageRef, ImageData)>,
    /// What the attachments add to the prompt's text: text files under their names, and each image's
    /// `[image: …]` line (what history keeps of it).
    pub text: Vec<String>,
    /// The turn's image permit ([`MAX_IMAGE_TURNS`]), once it handles an image.
    pub permit: Option<OwnedSemaphorePermit>,
}

impl Gathered {
    /// The prompt with what the attachments add.
    pub fn prompt(&self, prompt: &str) -> String {
        std::iter::once(prompt)
            .chain(self.text.iter().map(String::as_str))
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join("\n\n")
    }
}

/// One remembered image of a conversation.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Remembered {
    platform: Platform,
    epoch: u32,
    /// The conversation's turn count when the image's turn was stored (its position in the history).
    turn_no: u64,
    image: ImageRef,
}

/// Fetches and checks `inbound`'s attachments: a friendly failure names the first problem.
pub(super) async fn gather(
    core: &Core,
    config: &Config,
    inbound: &Inbound,
) -> Result<Gathered, UserFacingError> {
    let mut gathered = Gathered::default();
    if inbound.attachments.is_empty() {
        return Ok(gathered);
    }
    let source = core.media.get(inbound.chat.platform);
    for attachment in &inbound.attachments {
        let what = describe(attachment);
        let refused = |e: MediaError| {
            tracing::info!(error = %e, chat = %inbound.chat, "an attachment was refused");
            UserFacingError::new(FailureKind::Refused, e.user_message(&what))
        };
        let source = source
            .as_ref()
            .ok_or(MediaError::NoSource)
            .map_err(refused)?;
        match attachment.kind {
            AttachmentKind::Image => {
                if gathered.permit.is_none() {
                    gathered.permit = core.media.image_turn().await;
                }
                let (image, data) = fetch_image(source.as_ref(), config, attachment)
                    .await
                    .map_err(refused)?;
                gathered
                    .text
                    .push(image.summary(attachment.name.as_deref()));
                gathered.images.push((image, data));
            }
            AttachmentKind::Text => {
                let limits = Limits::from_config(&config.media, true);
                let bytes = fetch(source.as_ref(), attachment, limits)
                    .await
                    .map_err(refused)?;
                let name = attachment.name.as_deref().unwrap_or("file.txt");
                gathered
                    .text
                    .push(text::prompt_text(name, &bytes).map_err(refused)?);
            }
            AttachmentKind::Other => {
                let kind = attachment
                    .media_type
                    .clone()
                    .unwrap_or_else(|| "an unknown file type".into());
                return Err(refused(MediaError::Unsupported(kind)));
            }
        }
    }
    Ok(gathered)
}

/// How a reply names `attachment`: its file name, else "the photo".
fn describe(attachment: &Attachment) -> String {
    match &attachment.name {
        Some(name) => format!("`{name}`"),
        None if attachment.kind == AttachmentKind::Image => "the photo".into(),
        None => "the file".into(),
    }
}

/// Fetches `attachment` under `limits`, refusing one announced as larger before downloading.
async fn fetch(
    source: &dyn media::MediaSource,
    attachment: &Attachment,
    limits: Limits,
) -> Result<Vec<u8>, MediaError> {
    if attachment.size.is_some_and(|n| n > limits.max_bytes) {
        return Err(MediaError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    source.fetch(&attachment.source, limits).await
}

async fn fetch_image(
    source: &dyn media::MediaSource,
    config: &Config,
    attachment: &Attachment,
) -> Result<(ImageRef, ImageData), MediaError> {
    let declared = attachment.media_type.as_deref();
    if let Some(declared) = declared.filter(|t| !sniff::is_supported(t)) {
        return Err(MediaError::Unsupported(declared.to_owned()));
    }
    let bytes = fetch(
        source,
        attachment,
        Limits::from_config(&config.media, false),
    )
    .await?;
    media::accept_image(&attachment.source, &bytes).map_err(|e| match e {
        // It was announced (or, as a Telegram photo, always is) a supported image, yet its bytes are no
        // image we know: damaged, not a different type.
        MediaError::Unsupported(_) if declared.is_some() || attachment.name.is_none() => {
            MediaError::Corrupt
        }
        e => e,
    })
}

/// Remembers the images of the turn stored at `turn_no` for sending again with later turns.
pub(super) fn remember(
    core: &Core,
    key: &ConversationKey,
    platform: Platform,
    epoch: u32,
    turn_no: u64,
    images: &[ImageRef],
) {
    if images.is_empty() {
        return;
    }
    let result = core.store.kv_update(NS, key.as_str(), &mut |old| {
        let mut list: Vec<Remembered> = old
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default();
        list.retain(|r| r.epoch == epoch);
        list.extend(images.iter().map(|image| Remembered {
            platform,
            epoch,
            turn_no,
            image: image.clone(),
        }));
        let excess = list.len().saturating_sub(MAX_REMEMBERED);
        list.drain(..excess);
        serde_json::to_vec(&list).ok()
    });
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not remember a conversation's images");
    }
}

/// The images of earlier turns still within `media.resend_turns` of the turn at `turn_no`, fetched
/// again through their platform. One that cannot be fetched, or comes back as other bytes, is left out
/// (its `[image: …]` line stays in the history). Takes the turn's image permit into `permit` first.
pub(super) async fn resend(
    core: &Core,
    config: &Config,
    key: &ConversationKey,
    at: (u32, u64),
    permit: &mut Option<OwnedSemaphorePermit>,
) -> Vec<ImageData> {
    let (epoch, turn_no) = at;
    // Each earlier exchange is two turns (the question and its answer).
    let window = 2 * u64::from(config.media.resend_turns);
    let list: Vec<Remembered> = match core.store.kv_get(NS, key.as_str()) {
        Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_default(),
        Ok(None) => return Vec::new(),
        Err(e) => {
            tracing::warn!(error = %e, "could not read a conversation's images");
            return Vec::new();
        }
    };
    let mut images = Vec::new();
    let due: Vec<&Remembered> = list
        .iter()
        .filter(|r| r.epoch == epoch && r.turn_no < turn_no && turn_no - r.turn_no <= window)
        .collect();
    if !due.is_empty() && permit.is_none() {
        *permit = core.media.image_turn().await;
    }
    for r in due {
        let Some(source) = core.media.get(r.platform) else {
            continue;
        };
        let limits = Limits::from_config(&config.media, false);
        match source.fetch(&r.image.source, limits).await {
            Ok(bytes) if media::sha256_hex(&bytes) == r.image.sha256 => {
                images.push(media::encode(&r.image.media_type, &bytes));
            }
            Ok(_) => tracing::info!("an earlier image came back changed; not sent again"),
            Err(e) => tracing::info!(error = %e, "an earlier image could not be fetched again"),
        }
    }
    images
}

/// What an image turn's user is told when the router found no model to answer: never a text model's
/// blind guess, and plainly why.
pub(super) fn vision_failure(failure: UserFacingError, paid_allowed: bool) -> UserFacingError {
    match failure.kind {
        FailureKind::BadRequest | FailureKind::Unavailable | FailureKind::RateLimited => {
            let message = if paid_allowed {
                NO_VISION
            } else {
                NO_VISION_PAID_OFF
            };
            UserFacingError {
                message: message.to_owned(),
                ..failure
            }
        }
        _ => failure,
    }
}
