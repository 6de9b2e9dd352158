//! Fitting a conversation into a model's context window: the system prompt and the newest user turn are
//! always kept, then as many of the most recent earlier turns as the token budget allows. Pure functions;
//! the router calls them for each candidate model, so a fallback to a smaller model trims again.

use crate::domain::{ChatMessage, Role};

/// Characters per token for the estimate. Real tokenizers average 3.5–4.5 characters per token on
/// English text; 3.5 errs on the side of sending a little less, never a little too much.
const CHARS_PER_TOKEN_X2: usize = 7;
/// Per-message framing overhead (role markers, separators) in tokens, as OpenAI's cookbook counts it.
const TOKENS_PER_MESSAGE: usize = 4;

/// An estimate of the tokens `text` takes, rounding up; never zero for a non-empty text.
pub fn estimate_tokens(text: &str) -> usize {
    (text.chars().count() * 2).div_ceil(CHARS_PER_TOKEN_X2)
}

/// The estimated tokens of one message including its framing.
pub fn message_tokens(message: &ChatMessage) -> usize {
    estimate_tokens(&message.content) + TOKENS_PER_MESSAGE
}

/// The context sent to a model: `system` (if non-empty), then the newest turns of `history` that fit
/// `budget_tokens` in their original order, then `prompt`. The system prompt and prompt are always kept,
/// even if they alone exceed the budget (the provider will then say so, and the router reacts).
pub fn fit_context(
    system: &str,
    history: &[ChatMessage],
    prompt: &ChatMessage,
    budget_tokens: usize,
) -> Vec<ChatMessage> {
    let system_msg = (!system.is_empty()).then(|| ChatMessage::new(Role::System, system));
    let fixed = system_msg.as_ref().map_or(0, message_tokens) + message_tokens(prompt);
    let mut remaining = budget_tokens.saturating_sub(fixed);
    let mut kept = 0;
    for message in history.iter().rev() {
        let cost = message_tokens(message);
        if cost > remaining {
            break;
        }
        remaining -= cost;
        kept += 1;
    }
    let mut out = Vec::with_capacity(kept + 2);
    out.extend(system_msg);
    out.extend_from_slice(&history[history.len() - kept..]);
    out.push(prompt.clone());
    out
}

/// The prompt budget for a model with `context_window` tokens: the window less room for the answer
/// (a quarter of the window, at most 4,096 tokens: long enough for a full reply, small enough to keep
/// most of a small model's window for history).
pub fn prompt_budget(context_window: usize) -> usize {
    context_window.saturating_sub((context_window / 4).min(4096))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(role: Role, n: usize) -> ChatMessage {
        ChatMessage::new(role, "x".repeat(n))
    }

    #[test]
    fn keeps_system_and_prompt_and_newest_history() {
        let history: Vec<_> = (0..10)
            .map(|i| {
                turn(
                    if i % 2 == 0 {
                        Role::User
                    } else {
                        Role::Assistant
                    },
                    70,
                )
            })
            .collect();
        let prompt = turn(Role::User, 7);
        // each history turn costs 20 + 4 = 24 tokens; system 2 + 4; prompt 2 + 4.
        let fitted = fit_context("sys", &history, &prompt, 12 + 24 * 3);
        assert_eq!(fitted.len(), 5);
        assert_eq!(fitted[0].role, Role::System);
        assert_eq!(fitted[1..4], history[7..]);
        assert_eq!(fitted.last(), Some(&prompt));
    }

    #[test]
    fn keeps_system_and_prompt_even_over_budget() {
        let fitted = fit_context(
            "system prompt",
            &[turn(Role::User, 10)],
            &turn(Role::User, 1000),
            1,
        );
        assert_eq!(fitted.len(), 2);
        assert_eq!(fitted[0].role, Role::System);
    }

    #[test]
    fn empty_system_is_left_out() {
        assert_eq!(fit_context("", &[], &turn(Role::User, 1), 100).len(), 1);
        assert_eq!(prompt_budget(8192), 6144);
        assert_eq!(prompt_budget(131_072), 131_072 - 4096);
    }
}
