//! TEMPORARY private copy of `crate::platforms::render::split_message` (being written on branch
//! `telegram`): same signature and contract, deleted when that branch is merged. Splits a reply into
//! chunks of at most `limit` UTF-16 units on safe boundaries (paragraph → line → sentence → space →
//! character), never inside a UTF-8 character; a code fence cut by a split is closed and reopened with
//! its language. A chunk depends only on the text up to `limit` past its start, so chunks already sent
//! stay the same while the text grows.

/// What closes an open code fence at the end of a chunk.
const FENCE_CLOSE: &str = "\n```";

/// Splits `text` into chunks of at most `limit` UTF-16 units (see the module doc).
pub fn split_message(text: &str, limit: usize) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut rest = text;
    let mut open_fence: Option<String> = None;
    loop {
        let prefix = open_fence
            .as_ref()
            .map_or_else(String::new, |f| format!("{f}\n"));
        if utf16_len(&prefix) + utf16_len(rest) <= limit {
            if !rest.is_empty() || chunks.is_empty() {
                chunks.push(format!("{prefix}{rest}"));
            }
            return chunks;
        }
        // Reserve room for the fence that may have to be closed at the end of this chunk.
        let budget = limit
            .saturating_sub(utf16_len(&prefix) + utf16_len(FENCE_CLOSE))
            .max(1);
        let cut = choose_cut(rest, budget);
        let piece = &rest[..cut];
        let fence_after = fence_state_after(open_fence.clone(), piece);
        let mut chunk = format!("{prefix}{}", piece.trim_end_matches([' ', '\n']));
        if fence_after.is_some() {
            chunk.push_str(FENCE_CLOSE);
        }
        chunks.push(chunk);
        open_fence = fence_after;
        rest = rest[cut..].trim_start_matches('\n');
    }
}

/// Length in UTF-16 code units, the unit Discord and Telegram count in.
fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// The byte index to cut `text` at so the head fits in `budget` UTF-16 units, preferring the latest
/// paragraph break, then line break, then sentence end, then space in the last two thirds of the window.
fn choose_cut(text: &str, budget: usize) -> usize {
    let mut max = 0;
    let mut units = 0;
    for (i, c) in text.char_indices() {
        units += c.len_utf16();
        if units > budget {
            break;
        }
        max = i + c.len_utf8();
    }
    if max == 0 {
        // A single character wider than the budget: take it whole rather than loop forever.
        return text.chars().next().map_or(text.len(), char::len_utf8);
    }
    let window = &text[..max];
    let floor = max / 3;
    let candidates = [
        window.rfind("\n\n").map(|i| i + 2),
        window.rfind('\n').map(|i| i + 1),
        window
            .rfind(". ")
            .or_else(|| window.rfind("! "))
            .or_else(|| window.rfind("? "))
            .map(|i| i + 2),
        window.rfind(' ').map(|i| i + 1),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|&i| i > floor)
        .unwrap_or(max)
}

/// The fence line (e.g. "```rust") left open after `piece`, given the one open before it.
fn fence_state_after(mut open: Option<String>, piece: &str) -> Option<String> {
    for line in piece.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            open = match open {
                Some(_) => None,
                None => Some(trimmed.trim_end().to_owned()),
            };
        }
    }
    open
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_one_chunk() {
        assert_eq!(split_message("hello", 2000), vec!["hello".to_string()]);
    }

    #[test]
    fn fences_are_closed_and_reopened_with_language() {
        let body: String = (0..300).map(|i| format!("let x{i} = {i};\n")).collect();
        let text = format!("Intro.\n\n```rust\n{body}```\nDone.");
        let chunks = split_message(&text, 2000);
        assert!(chunks.len() >= 3, "{}", chunks.len());
        for c in &chunks {
            assert!(utf16_len(c) <= 2000);
            assert_eq!(c.matches("```").count() % 2, 0, "unbalanced fence in {c}");
        }
        assert!(chunks[1].starts_with("```rust\n"));
    }

    #[test]
    fn chunks_are_stable_as_text_grows_and_never_split_chars() {
        let text: String = "😀 ünïcödé word. ".repeat(400);
        let full = split_message(&text, 500);
        let mut cut = text.len() * 2 / 3;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        let partial = split_message(&text[..cut], 500);
        for (a, b) in partial.iter().zip(&full).take(partial.len() - 1) {
            assert_eq!(a, b);
        }
        assert!(full.iter().all(|c| utf16_len(c) <= 500));
    }
}
