//! Rendering shared by the platform adapters: splitting long replies on safe boundaries (never inside a
//! code block or a UTF-8 character) and Markdown handling.
//!
//! [`split_message`] measures in UTF-16 code units, which is what Telegram counts; Discord counts
//! characters, which is never more, so one splitter serves both. Chunk boundaries depend only on the text
//! before them, so a streamed reply can roll over to a new message without earlier messages changing.

/// Limits below this are raised to it: a chunk must hold a reopened fence (`` ```lang `` + newline),
/// its closer and at least some text, or splitting could not make progress.
pub const MIN_SPLIT_LIMIT: usize = 64;

/// A fence's info string (language tag) longer than this is not repeated when the fence is reopened
/// in the next chunk: a hostile tag must not eat a chunk's budget.
const MAX_REOPEN_INFO: usize = 32;

/// Room kept at the end of every chunk for a fence closer (`\n```` is 4 units). Kept even when the
/// chunk turns out not to end inside a fence, so the budget depends only on where the chunk starts.
const CLOSER_RESERVE: usize = 4;

/// The number of UTF-16 code units in `s` (Telegram's measure of message length).
pub fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// Splits `text` into chunks of at most `limit` UTF-16 code units (`limit` below [`MIN_SPLIT_LIMIT`] is
/// raised to it), preferring paragraph, then line, then sentence, then space boundaries, never splitting a
/// UTF-8 character. A chunk that ends inside a fenced code block gets the fence closed, and the next chunk
/// reopens it with its language tag. Boundaries before the last chunk do not move when text is appended.
pub fn split_message(text: &str, limit: usize) -> Vec<String> {
    split_weighted(text, limit, char::len_utf16)
}

/// [`split_message`] measuring each character by `weight` instead of its UTF-16 length: a platform
/// that escapes characters when rendering (Telegram HTML: `<` is `&lt;`) passes the rendered length,
/// so a cut is chosen by the length the platform will count.
pub fn split_weighted(text: &str, limit: usize, weight: fn(char) -> usize) -> Vec<String> {
    split_parts_weighted(text, limit, weight)
        .into_iter()
        .map(|p| format!("{}{}{}", p.opener, p.body, p.closer))
        .collect()
}

/// One chunk: the slice of the input it carries plus what was added around it to keep fences balanced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Part<'a> {
    /// A reopened fence (`` ```rust\n ``), or empty.
    pub opener: String,
    /// The input text this chunk carries.
    pub body: &'a str,
    /// A fence closer (`\n```` or ```` ``` ````), or empty.
    pub closer: &'static str,
}

/// Fence state while scanning: `Some(info)` inside a fenced block opened with `info`.
type Fence = Option<String>;

/// [`split_message`] before assembly, for tests that check nothing but fences was added.
#[cfg(test)]
pub(crate) fn split_parts(text: &str, limit: usize) -> Vec<Part<'_>> {
    split_parts_weighted(text, limit, char::len_utf16)
}

/// [`split_parts`] with characters measured by `weight`.
fn split_parts_weighted(text: &str, limit: usize, weight: fn(char) -> usize) -> Vec<Part<'_>> {
    let measure = |s: &str| s.chars().map(weight).sum::<usize>();
    let limit = limit.max(MIN_SPLIT_LIMIT);
    let mut parts = Vec::new();
    let mut rest = text;
    let mut fence: Fence = None;
    let mut at_line_start = true;
    loop {
        let opener = fence.as_ref().map_or_else(String::new, |info| reopen(info));
        let room = limit - measure(&opener);
        if measure(rest) <= room {
            parts.push(Part {
                opener,
                body: rest,
                closer: "",
            });
            return parts;
        }
        let budget = room - CLOSER_RESERVE;
        let window_end = prefix_within(rest, budget, weight);
        let cut = choose_cut(&rest[..window_end]);
        let body = &rest[..cut];
        let end_fence = scan_fences(body, fence.clone(), at_line_start);
        let closer = match end_fence {
            Some(_) if body.ends_with('\n') => "```",
            Some(_) => "\n```",
            None => "",
        };
        parts.push(Part {
            opener,
            body,
            closer,
        });
        at_line_start = body.ends_with('\n');
        fence = end_fence;
        rest = &rest[cut..];
    }
}

/// The opening line that reopens a fence with `info` in the next chunk.
fn reopen(info: &str) -> String {
    if utf16_len(info) <= MAX_REOPEN_INFO && !info.contains('`') {
        format!("```{info}\n")
    } else {
        "```\n".to_owned()
    }
}

/// The largest byte index `i` (on a char boundary) whose prefix weighs at most `budget`.
fn prefix_within(s: &str, budget: usize, weight: fn(char) -> usize) -> usize {
    let mut used = 0;
    for (i, c) in s.char_indices() {
        used += weight(c);
        if used > budget {
            return i;
        }
    }
    s.len()
}

/// Finds a candidate cut (a byte index just after a boundary) in a window.
type Finder = dyn Fn(&str) -> Option<usize>;

/// Where to cut a window that is full: after the last paragraph break, line break, sentence end or space
/// in its second half (in that order of preference), else at its end. Looks only inside the window.
fn choose_cut(window: &str) -> usize {
    let half = window.len() / 2;
    let candidates: [&Finder; 4] = [
        &|w| w.rfind("\n\n").map(|i| i + 2),
        &|w| w.rfind('\n').map(|i| i + 1),
        &|w| {
            [". ", "! ", "? ", "。", "！", "？"]
                .iter()
                .filter_map(|p| w.rfind(p).map(|i| i + p.len()))
                .max()
        },
        &|w| w.rfind([' ', '\t']).map(|i| i + 1),
    ];
    for find in candidates {
        if let Some(cut) = find(window) {
            if cut > half && cut <= window.len() {
                return cut;
            }
        }
    }
    if window.is_empty() {
        // Budget smaller than the first character (cannot happen above MIN_SPLIT_LIMIT): take one char.
        return 0;
    }
    window.len()
}

/// The fence state after `body`, starting in `fence`; `at_line_start` says whether `body` begins a line.
/// A line whose first non-space characters (at most three spaces) are ```` ``` ```` opens or closes a block.
fn scan_fences(body: &str, mut fence: Fence, at_line_start: bool) -> Fence {
    for (n, line) in body.split('\n').enumerate() {
        if n == 0 && !at_line_start {
            continue;
        }
        let trimmed = line.trim_start_matches(' ');
        if line.len() - trimmed.len() > 3 || !trimmed.starts_with("```") {
            continue;
        }
        fence = match fence {
            Some(_) => None,
            None => Some(trimmed.trim_start_matches('`').trim().to_owned()),
        };
    }
    fence
}

/// Whether the fences in `chunk` (read on its own) are balanced.
pub fn fences_balanced(chunk: &str) -> bool {
    scan_fences(chunk, None, true).is_none()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn strip(parts: &[Part<'_>]) -> String {
        parts.iter().map(|p| p.body).collect()
    }

    #[test]
    fn short_text_is_one_chunk() {
        assert_eq!(split_message("hello", 4096), vec!["hello".to_string()]);
        assert_eq!(split_message("", 4096), vec![String::new()]);
    }

    #[test]
    fn prefers_paragraphs_then_lines() {
        let text = format!(
            "{}\n\n{}\n{}",
            "a".repeat(60),
            "b".repeat(30),
            "c".repeat(30)
        );
        let chunks = split_message(&text, 80);
        assert_eq!(chunks[0], format!("{}\n\n", "a".repeat(60)));
        let text = format!("{} {}. {}", "a".repeat(40), "b".repeat(20), "c".repeat(40));
        let chunks = split_message(&text, 80);
        assert_eq!(
            chunks[0],
            format!("{} {}. ", "a".repeat(40), "b".repeat(20))
        );
    }

    #[test]
    fn code_fences_are_closed_and_reopened_with_their_language() {
        let code: String = (0..40)
            .flat_map(|i| [format!("let x{i} = {i};"), "\n".into()])
            .collect();
        let text = format!("Intro\n\n```rust\n{code}```\nafter");
        let chunks = split_message(&text, 200);
        assert!(chunks.len() > 2);
        for c in &chunks {
            assert!(utf16_len(c) <= 200, "{c}");
            assert!(fences_balanced(c), "unbalanced: {c:?}");
        }
        assert!(chunks[1].starts_with("```rust\n"), "{:?}", chunks[1]);
        assert!(chunks[0].ends_with("```"));
    }

    #[test]
    fn counts_utf16_and_never_splits_a_char() {
        let text = "😀".repeat(100); // 2 UTF-16 units each, no boundaries at all
        let chunks = split_message(&text, 64);
        assert!(chunks.iter().all(|c| utf16_len(c) <= 64));
        assert_eq!(chunks.concat(), text);
        assert_eq!(chunks[0].chars().count(), 30); // 60 units: 64 minus the fence reserve
    }

    #[test]
    fn hostile_info_string_is_not_repeated() {
        let text = format!("```{}\n{}\n```", "x".repeat(500), "y ".repeat(400));
        for c in split_message(&text, 100) {
            assert!(utf16_len(&c) <= 100);
        }
    }

    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[a-z]{1,12}".prop_map(|s| s),
            3 => Just(" ".to_string()),
            1 => Just("\n".to_string()),
            1 => Just("\n\n".to_string()),
            1 => Just(". ".to_string()),
            1 => Just("\n```rust\n".to_string()),
            1 => Just("\n```\n".to_string()),
            1 => Just("é".to_string()),
            1 => Just("😀".to_string()),
            1 => Just("漢字".to_string()),
            1 => "[a-z]{30,90}".prop_map(|s| s),
        ]
    }

    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(token(), 0..300).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn chunks_fit_and_reassemble(text in text(), limit in 64usize..400) {
            let parts = split_parts(&text, limit);
            prop_assert_eq!(strip(&parts), text.clone());
            let chunks = split_message(&text, limit);
            let last = chunks.len() - 1;
            for (i, c) in chunks.iter().enumerate() {
                prop_assert!(utf16_len(c) <= limit, "chunk {} too long: {}", i, utf16_len(c));
                if i < last || fences_balanced(&text) {
                    prop_assert!(fences_balanced(c), "unbalanced chunk {}: {:?}", i, c);
                }
            }
        }

        #[test]
        fn boundaries_are_stable_when_text_grows(text in text(), more in text(), limit in 64usize..400) {
            let before = split_message(&text, limit);
            let grown = format!("{text}{more}");
            let after = split_message(&grown, limit);
            prop_assert!(after.len() >= before.len());
            let n = before.len() - 1;
            prop_assert_eq!(&before[..n], &after[..n]);
            let tail: String = split_parts(&grown, limit)[n..].iter().map(|p| p.body).collect();
            let old_tail = split_parts(&text, limit)[n].body;
            prop_assert!(tail.starts_with(old_tail));
        }
    }
}
