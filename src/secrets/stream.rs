//! Scrubbing a streamed answer: a secret split across two pieces (`"… sk-or-v1-ab"`, `"cd…"`) is
//! removed as surely as one inside a single piece. The end of each piece that could be the start of a
//! secret waits for the next piece; the rest goes out at once. Written once, used by the bots' turns
//! and by the local API.

use std::borrow::Cow;

use futures_util::stream::{self, StreamExt};

use super::{needles, scrub, scrub_with};
use crate::domain::{ReplyEvent, ReplyStream, UserFacingError};

/// Removes every installed secret from a stream of text pieces, including one split across pieces.
/// Whatever it returns, concatenated, equals [`scrub`] of the whole text.
#[derive(Debug, Default)]
pub struct StreamScrubber {
    /// The end of the text so far that could begin a secret: shown once the next piece rules it out.
    held: String,
}

impl StreamScrubber {
    /// The text that can be shown now, given the next `piece`.
    pub fn push(&mut self, piece: &str) -> String {
        let needles = needles();
        if needles.is_empty() && self.held.is_empty() {
            return piece.to_owned();
        }
        let mut text = std::mem::take(&mut self.held);
        text.push_str(piece);
        let mut text = match scrub_with(&needles, &text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(clean) => clean,
        };
        let from = held_from(&needles, &text);
        self.held = text.split_off(from);
        text
    }

    /// The text still held, at the end of the stream: it is no secret (only a secret's beginning).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }
}

/// Where the longest end of `text` that is the beginning of a needle (and not a whole one) starts;
/// `text.len()` when there is none. Only the last (longest needle − 1) bytes can be one.
fn held_from(needles: &[String], text: &str) -> usize {
    let longest = needles.first().map_or(0, String::len);
    let start = text.len().saturating_sub(longest.saturating_sub(1));
    (start..text.len())
        .filter(|&at| text.is_char_boundary(at))
        .find(|&at| {
            let tail = &text[at..];
            needles
                .iter()
                .any(|n| n.len() > tail.len() && n.starts_with(tail))
        })
        .unwrap_or(text.len())
}

/// Which stream the held text belongs to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Piece {
    #[default]
    Answer,
    Reasoning,
}

/// What [`ReplyScrubber::clean`] passes on for one event: held text it released, then the event.
pub type Cleaned =
    std::iter::Chain<std::option::IntoIter<ReplyEvent>, std::option::IntoIter<ReplyEvent>>;

/// [`StreamScrubber`] over reply events: the answer's and the reasoning's text as streams, notices,
/// failures and tool-call pieces each whole. Order is kept: held text goes out before any event of
/// another kind.
#[derive(Debug, Default)]
pub struct ReplyScrubber {
    text: StreamScrubber,
    holding: Piece,
}

impl ReplyScrubber {
    /// The events to pass on for `event`: held text released by it (at most one), then the event
    /// scrubbed, unless all of its text is held.
    pub fn clean(&mut self, event: ReplyEvent) -> Cleaned {
        let piece = match &event {
            ReplyEvent::Delta(_) => Some(Piece::Answer),
            ReplyEvent::Reasoning(_) => Some(Piece::Reasoning),
            _ => None,
        };
        let released = if self.text.is_holding() && piece != Some(self.holding) {
            Some(as_event(self.holding, self.text.finish()))
        } else {
            None
        };
        let cleaned = match event {
            ReplyEvent::Delta(t) | ReplyEvent::Reasoning(t) => {
                let kind = piece.unwrap_or_default();
                self.holding = kind;
                let shown = self.text.push(&t);
                (!shown.is_empty()).then(|| as_event(kind, shown))
            }
            ReplyEvent::Notice(t) => Some(ReplyEvent::Notice(owned(&t))),
            ReplyEvent::Failed(f) => Some(ReplyEvent::Failed(UserFacingError {
                message: owned(&f.message),
                ..f
            })),
            ReplyEvent::ToolCall(mut call) => {
                call.arguments = owned(&call.arguments);
                Some(ReplyEvent::ToolCall(call))
            }
            other => Some(other),
        };
        released.into_iter().chain(cleaned)
    }
}

fn as_event(piece: Piece, text: String) -> ReplyEvent {
    match piece {
        Piece::Answer => ReplyEvent::Delta(text),
        Piece::Reasoning => ReplyEvent::Reasoning(text),
    }
}

fn owned(text: &str) -> String {
    scrub(text).into_owned()
}

/// `reply` with every installed secret removed from what it shows, as [`ReplyScrubber`] does.
pub fn scrub_reply(reply: ReplyStream) -> ReplyStream {
    let mut scrubber = ReplyScrubber::default();
    reply
        .flat_map(move |event| stream::iter(scrubber.clean(event)))
        .boxed()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use secrecy::SecretString;

    use super::*;
    use crate::domain::{Completion, FailureKind};

    const KEY: &str = "sk-or-v1-STREAMtestKEY0123456789";

    fn installed() {
        super::super::install([&SecretString::from(KEY)]);
    }

    fn pushed(pieces: &[&str]) -> Vec<String> {
        let mut s = StreamScrubber::default();
        let mut out: Vec<String> = pieces.iter().map(|p| s.push(p)).collect();
        out.push(s.finish());
        out
    }

    #[test]
    fn a_secret_split_across_pieces_is_removed() {
        installed();
        let out = pushed(&[
            "your key is sk-or-v1-STRE",
            "AMtestKEY01",
            "23456789, keep it",
        ]);
        assert_eq!(out.concat(), "your key is [redacted], keep it");
        // What could not be a secret went out at once.
        assert_eq!(out[0], "your key is ");
    }

    #[test]
    fn a_held_beginning_that_is_no_secret_goes_out_with_the_next_piece_or_at_the_end() {
        installed();
        let out = pushed(&["try sk-or", "-v1 now", " and sk-"]);
        assert_eq!(out, ["try ", "sk-or-v1 now", " and ", "sk-"]);
    }

    #[test]
    fn text_and_reasoning_keep_their_order_and_kinds() {
        installed();
        let mut s = ReplyScrubber::default();
        let mut out = Vec::new();
        for event in [
            ReplyEvent::Reasoning("think sk-or-v1-".into()),
            ReplyEvent::Delta("answer".into()),
            ReplyEvent::Delta(" sk-or-v1-STREAMtest".into()),
            ReplyEvent::Delta("KEY0123456789".into()),
            ReplyEvent::Failed(UserFacingError::new(
                FailureKind::Interrupted,
                format!("cut at {KEY}"),
            )),
        ] {
            out.extend(s.clean(event));
        }
        let shown: Vec<String> = out
            .iter()
            .map(|e| match e {
                ReplyEvent::Reasoning(t) => format!("R:{t}"),
                ReplyEvent::Delta(t) => format!("D:{t}"),
                ReplyEvent::Failed(f) => format!("F:{}", f.message),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            shown,
            [
                "R:think ",
                "R:sk-or-v1-",
                "D:answer",
                "D: ",
                "D:[redacted]",
                "F:cut at [redacted]"
            ]
        );
    }

    #[tokio::test]
    async fn a_reply_stream_ends_with_its_held_text_before_the_finish() {
        installed();
        let reply = stream::iter([
            ReplyEvent::Delta("the end: sk-or".into()),
            ReplyEvent::Finished(Completion::default()),
        ])
        .boxed();
        let events: Vec<ReplyEvent> = scrub_reply(reply).collect().await;
        assert!(matches!(&events[0], ReplyEvent::Delta(t) if t == "the end: "));
        assert!(matches!(&events[1], ReplyEvent::Delta(t) if t == "sk-or"));
        assert!(matches!(events[2], ReplyEvent::Finished(_)));
    }

    proptest! {
        /// However the text is cut into pieces, what is shown is the whole text scrubbed.
        #[test]
        fn any_split_shows_the_whole_text_scrubbed(
            parts in proptest::collection::vec(
                prop_oneof![Just(KEY.to_owned()), "[a-z ésk\\-]{0,12}"], 0..6),
            cuts in proptest::collection::vec(0usize..200, 0..8),
        ) {
            installed();
            let whole = parts.concat();
            let mut at: Vec<usize> = cuts
                .into_iter()
                .map(|c| c % (whole.len() + 1))
                .filter(|&c| whole.is_char_boundary(c))
                .collect();
            at.sort_unstable();
            at.dedup();
            let mut pieces = Vec::new();
            let mut from = 0;
            for c in at.into_iter().chain([whole.len()]) {
                pieces.push(&whole[from..c]);
                from = c;
            }
            prop_assert_eq!(pushed(&pieces).concat(), scrub(&whole).into_owned());
        }
    }
}
