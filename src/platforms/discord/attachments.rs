//! Discord attachments → [`Attachment`]s: images (`content_type` image/*), text files, anything else;
//! the handle is the attachment's URL, fetched by [`crate::media::download::UrlSource`].

use serenity::all::Message;

use crate::domain::Attachment;
use crate::media::text::kind_of;

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
