//! A client's messages and settings as the router's [`CompletionRequest`], the same for both
//! surfaces: leading system messages become the system prompt, the last message the prompt, the rest
//! the history; the model name is resolved by the router (`None` → 404); usage is counted under the
//! caller.

use std::sync::Arc;

use super::auth::Caller;
use super::error::{ApiError, Surface};
use crate::domain::{ChatMessage, ChatRef, ConversationKey, Platform, Role};
use crate::generation::{GenerationParams, ImageData};
use crate::router::{CompletionRequest, LlmRouter};

/// What a client asked, in the router's vocabulary but before resolution.
#[derive(Debug)]
pub struct Ask {
    /// The model name as the client sent it.
    pub model: String,
    /// Every message, in order.
    pub messages: Vec<ChatMessage>,
    /// Sampling, tools, format, reasoning.
    pub params: GenerationParams,
    /// The client's answer cap, only when it set one.
    pub max_tokens: Option<u32>,
}

/// Builds the router request for `ask` from `caller`. 400 without messages, 404 for an unknown model.
pub fn completion_request(
    surface: Surface,
    router: &dyn LlmRouter,
    caller: &Caller,
    ask: Ask,
) -> Result<CompletionRequest, ApiError> {
    let Some(selector) = router.resolve_model(&ask.model) else {
        return Err(ApiError::unknown_model(surface, &ask.model));
    };
    let mut messages = ask.messages;
    let leading = messages
        .iter()
        .take_while(|m| m.role == Role::System)
        .count();
    if leading == messages.len() {
        return Err(ApiError::bad_field(
            surface,
            "messages",
            "messages must hold at least one message that is not a system message",
        ));
    }
    let rest = messages.split_off(leading);
    let system_prompt = messages
        .into_iter()
        .map(|m| m.content)
        .collect::<Vec<_>>()
        .join("\n\n");
    let mut history = rest;
    let prompt = history.pop().expect("checked non-empty above");
    let user = caller.user();
    Ok(CompletionRequest {
        // Stateless: one key per caller, only the paid-tier notice's bookkeeping reads it.
        conversation: ConversationKey(format!("api:{}", caller.id)),
        chat: ChatRef::new(Platform::Api, caller.id.clone()),
        user,
        system_prompt,
        history,
        prompt,
        model: None,
        selector,
        params: ask.params,
        sticky: false,
        paid_allowed: caller.paid_allowed(),
        max_tokens: ask.max_tokens,
    })
}

/// An image a client sent as bare base64 (Ollama's `images`), its media type read from the first bytes
/// (PNG, JPEG, GIF, WebP); `image/png` when unknown, as Ollama assumes.
pub fn image_from_base64(base64: &str) -> ImageData {
    let media_type = if base64.starts_with("/9j/") {
        "image/jpeg"
    } else if base64.starts_with("R0lGOD") {
        "image/gif"
    } else if base64.starts_with("UklGR") {
        "image/webp"
    } else {
        "image/png"
    };
    ImageData {
        media_type: media_type.into(),
        base64: Arc::from(base64),
    }
}

/// An image from a `data:` URI (OpenAI's `image_url` content part). Links to elsewhere are refused:
/// switchboard fetches nothing on a client's behalf.
pub fn image_from_data_uri(
    surface: Surface,
    field: &str,
    url: &str,
) -> Result<ImageData, ApiError> {
    let parsed = url
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,"));
    match parsed {
        Some((media_type, data)) if !data.is_empty() => Ok(ImageData {
            media_type: if media_type.is_empty() {
                "image/png".into()
            } else {
                media_type.into()
            },
            base64: Arc::from(data),
        }),
        _ => Err(ApiError::bad_field(
            surface,
            field,
            "images must be data: URIs with base64 content (data:image/png;base64,...)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::scripted::ScriptedRouter;
    use crate::router::ModelSelector;

    fn ask(model: &str, messages: Vec<ChatMessage>) -> Ask {
        Ask {
            model: model.into(),
            messages,
            params: GenerationParams::default(),
            max_tokens: None,
        }
    }

    #[test]
    fn leading_system_messages_become_the_prompt_and_the_last_message_the_prompt() {
        let router = ScriptedRouter::new();
        let messages = vec![
            ChatMessage::new(Role::System, "be brief"),
            ChatMessage::new(Role::System, "be kind"),
            ChatMessage::new(Role::User, "hi"),
            ChatMessage::new(Role::Assistant, "hello"),
            ChatMessage::new(Role::User, "how are you"),
        ];
        let req = completion_request(
            Surface::OpenAi,
            &*router,
            &Caller::local(),
            ask("auto", messages),
        )
        .unwrap();
        assert_eq!(req.system_prompt, "be brief\n\nbe kind");
        assert_eq!(req.history.len(), 2);
        assert_eq!(req.prompt.content, "how are you");
        assert_eq!(req.selector, ModelSelector::Policy);
        assert!(!req.sticky);
        assert_eq!(req.user.platform, Platform::Api);
        assert_eq!(req.max_tokens, None);
    }

    #[test]
    fn an_unknown_model_is_404_and_only_system_messages_400() {
        let router = ScriptedRouter::new();
        let e = completion_request(
            Surface::OpenAi,
            &*router,
            &Caller::local(),
            ask("nope", vec![ChatMessage::new(Role::User, "x")]),
        )
        .unwrap_err();
        assert_eq!(e.status.as_u16(), 404);
        let e = completion_request(
            Surface::OpenAi,
            &*router,
            &Caller::local(),
            ask("auto", vec![ChatMessage::new(Role::System, "x")]),
        )
        .unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
    }

    #[test]
    fn images_take_their_media_type_and_links_are_refused() {
        assert_eq!(image_from_base64("/9j/4AAQ").media_type, "image/jpeg");
        assert_eq!(image_from_base64("iVBORw0K").media_type, "image/png");
        let img =
            image_from_data_uri(Surface::OpenAi, "f", "data:image/webp;base64,UklGR").unwrap();
        assert_eq!(img.media_type, "image/webp");
        assert_eq!(&*img.base64, "UklGR");
        assert!(image_from_data_uri(Surface::OpenAi, "f", "https://x/y.png").is_err());
    }
}
