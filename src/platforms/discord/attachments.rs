//! Discord attachments → [`Attachment`]s: images (`content_type` image/*), text files, anything else;
//! the handle is the attachment's URL, fetched by [`crate::media::download::UrlSource`].

use serenity::all::Message;

use crate::config::Config;
use crate::domain::{Attachment, Platform};
use crate::exit::Fatal;
use crate::media::download::{Downloader, UrlSource};
use crate::media::text::kind_of;
use crate::platforms::AdapterContext;

/// Lets the core fetch attachments by their URLs (Discord's CDN needs no token).
pub fn register_source(ctx: &AdapterContext, config: &Config) -> Result<(), Fatal> {
    let connect = std::time::Duration::from_secs(config.media.connect_timeout_secs);
    let downloader = Downloader::new(connect)
        .map_err(|e| Fatal::Other(anyhow::anyhow!("discord: the download client: {e}")))?;
    ctx.core.set_media_source(
        Platform::Discord,
        std::sync::Arc::new(UrlSource::new(downloader)),
    );
    Ok(())
}

/// The attachments of `message`, as the core takes them.
pub fn attachments(message: &Message) -> Vec<Attachment> {
    message
        .attachments
        .iter()
        .map(|a| Attachment {
            kind: kind_of(Some(&a.filename), a.content_type.as_deref()),
            source: a.url.clone(),
            name: Some(a.filename.clone()),
            media_type: a.content_type.clone(),
            size: Some(u64::from(a.size)),
        })
        .collect()
}
