//! Making a provider's error text safe to carry: no URLs, no key-like tokens, bounded length.

/// The longest provider message kept in an error. Enough to tell "per-day limit" from "context length";
/// short enough that a provider echoing a whole prompt does not flood logs or chat replies.
pub const MAX_MESSAGE_CHARS: usize = 200;

/// Shortens `message` to [`MAX_MESSAGE_CHARS`], replaces URLs with `[url]` and key-like tokens
/// (`sk-…`, `Bearer …`) with `[redacted]`, and collapses whitespace and control characters.
pub fn sanitize_message(message: &str) -> String {
    let mut out = String::new();
    let mut redact_next = false;
    for word in message.split_whitespace() {
        let word: String = word.chars().filter(|c| !c.is_control()).collect();
        if word.is_empty() {
            continue;
        }
        let lower = word.to_ascii_lowercase();
        let replacement = if redact_next {
            redact_next = false;
            Some("[redacted]")
        } else if lower.contains("://") || lower.starts_with("www.") {
            Some("[url]")
        } else if lower.contains("sk-") || lower.starts_with("key=") {
            Some("[redacted]")
        } else {
            None
        };
        if lower == "bearer" {
            redact_next = true;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        match replacement {
            Some(r) => out.push_str(r),
            None => out.push_str(&word),
        }
        if out.chars().count() > MAX_MESSAGE_CHARS {
            break;
        }
    }
    if out.chars().count() > MAX_MESSAGE_CHARS {
        out = out.chars().take(MAX_MESSAGE_CHARS).collect();
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_keys_are_removed() {
        let s = sanitize_message(
            "bad key sk-or-v1-abc at https://openrouter.ai/api/v1/x?key=1 Bearer abc123\n\u{7}",
        );
        assert_eq!(s, "bad key [redacted] at [url] Bearer [redacted]");
        assert!(sanitize_message(&"word ".repeat(200)).chars().count() <= MAX_MESSAGE_CHARS + 1);
    }
}
