//! Removing the bot's mention from a message's text so the model reads what a person would: "hey @bot,
//! summarize" becomes "hey, summarize", not "hey , summarize". Shared by the Telegram (`@username`) and
//! Discord (`<@id>`) adapters; each finds its own mentions, this module only splices them out.

use std::ops::Range;

/// Punctuation that attaches to the word before it: a mention followed by one of these leaves no space.
const TRAILING_PUNCTUATION: &[char] = &[',', '.', ':', ';', '!', '?'];

/// `text` with the byte `ranges` (sorted, non-overlapping, on char boundaries) removed and the joins
/// tidied: spaces around a removed mention collapse to one, no space is left before punctuation, a
/// leading mention takes its `,`/`:` with it ("@bot, what…" → "what…"), and newlines are kept.
pub fn splice_out(text: &str, ranges: &[Range<usize>]) -> String {
    if ranges.is_empty() {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    for range in ranges
        .iter()
        .chain(std::iter::once(&(text.len()..text.len())))
    {
        let piece = &text[from..range.start];
        if from == 0 {
            out.push_str(piece);
        } else {
            join(&mut out, piece);
        }
        from = range.end;
    }
    out.trim().to_owned()
}

/// Appends `right` to `out` where a mention was removed between them.
fn join(out: &mut String, right: &str) {
    let kept = out.trim_end_matches([' ', '\t']).len();
    out.truncate(kept);
    let right = right.trim_start_matches([' ', '\t']);
    let at_line_start = out.is_empty() || out.ends_with('\n');
    if right.starts_with(TRAILING_PUNCTUATION) {
        if at_line_start {
            // "@bot, what is…": the comma addressed the bot; drop it with the mention.
            out.push_str(right.trim_start_matches(TRAILING_PUNCTUATION).trim_start());
        } else {
            out.push_str(right);
        }
    } else if at_line_start || right.is_empty() || right.starts_with('\n') {
        out.push_str(right);
    } else {
        out.push(' ');
        out.push_str(right);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splices out every occurrence of `mention` in `text`.
    fn strip(text: &str, mention: &str) -> String {
        let ranges: Vec<_> = text
            .match_indices(mention)
            .map(|(i, m)| i..i + m.len())
            .collect();
        splice_out(text, &ranges)
    }

    #[test]
    fn a_mention_leaves_no_stray_space_or_punctuation() {
        assert_eq!(strip("hey @bot, summarize", "@bot"), "hey, summarize");
        assert_eq!(
            strip("what do you think @bot?", "@bot"),
            "what do you think?"
        );
        assert_eq!(strip("@bot, what is 2+2?", "@bot"), "what is 2+2?");
        assert_eq!(strip("@bot: /reset", "@bot"), "/reset");
        assert_eq!(strip("ask  @bot  about it", "@bot"), "ask about it");
        assert_eq!(strip("hi @bot", "@bot"), "hi");
        assert_eq!(strip("@bot", "@bot"), "");
    }

    #[test]
    fn newlines_and_the_rest_of_the_text_are_kept() {
        assert_eq!(strip("hey @bot\nline  two", "@bot"), "hey\nline  two");
        assert_eq!(strip("a\n@bot, b", "@bot"), "a\nb");
        assert_eq!(strip("no mention  here", "@bot"), "no mention  here");
    }
}
