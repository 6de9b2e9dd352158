//! The streamed body of an answer with the stream faults of [`Fault`] applied, written once for both
//! wires (OpenRouter's SSE, Ollama's NDJSON); each wire only says how a delta, a gap, an error and the
//! end look.

use axum::http::HeaderValue;
use axum::response::Response;

use super::control::Desk;
use super::server::{scripted_body, Step};
use super::Fault;

/// One piece of a streamed answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    /// A piece of reasoning (streamed before the answer).
    Reasoning(String),
    /// A piece of the answer's text.
    Text(String),
    /// A piece of tool call `index`: its first piece names the function, later ones continue the
    /// arguments (OpenAI); Ollama sends each call whole in one piece.
    Call {
        /// Which call of the answer.
        index: u32,
        /// The function's name, on the call's first piece.
        name: Option<String>,
        /// The next part of the arguments' JSON text.
        arguments: String,
    },
}

/// How one wire format writes the pieces of a streamed answer.
pub(crate) trait Wire {
    /// Whether the wire is SSE (decides the piece an endless body repeats).
    const SSE: bool;
    /// The delta carrying piece `index` of the reply.
    fn delta(&self, index: usize, piece: &Piece) -> Step;
    /// What goes between two deltas (the chunk delay, keep-alives).
    fn gap(&self, steps: &mut Vec<Step>);
    /// An error inside the stream: `code` is the status of a `MidStreamStatus`, `None` for a
    /// `MidStreamError`.
    fn error(&self, code: Option<u16>, message: &str) -> Step;
    /// The normal end of the stream.
    fn end(&self, steps: &mut Vec<Step>);
}

/// Appends the deltas of `chunks` to `steps`, cut and ended as the stream `fault` (if any) says.
pub(crate) fn script<W: Wire>(
    wire: &W,
    mut steps: Vec<Step>,
    chunks: &[Piece],
    fault: Option<Fault>,
) -> Vec<Step> {
    let cut_after = match &fault {
        Some(Fault::StallAfter(n) | Fault::TruncateAfter(n)) => Some(*n),
        Some(
            Fault::MidStreamError { after, .. }
            | Fault::MidStreamStatus { after, .. }
            | Fault::Unterminated { after },
        ) => Some(*after),
        _ => None,
    };
    for (i, piece) in chunks.iter().enumerate() {
        if cut_after == Some(i) {
            break;
        }
        if i > 0 {
            wire.gap(&mut steps);
        }
        steps.push(wire.delta(i, piece));
    }
    match fault {
        Some(Fault::StallAfter(_)) => steps.push(Step::Stall),
        Some(Fault::TruncateAfter(_)) => {}
        Some(Fault::Unterminated { .. }) => steps.push(Step::Endless(super::endless_piece(W::SSE))),
        Some(Fault::MidStreamError { message, .. }) => steps.push(wire.error(None, &message)),
        Some(Fault::MidStreamStatus { code, message, .. }) => {
            steps.push(wire.error(Some(code), &message));
        }
        _ => wire.end(&mut steps),
    }
    steps
}

/// A 200 response whose body plays `steps`, with `content_type`.
pub(crate) fn streamed(desk: &Desk, steps: Vec<Step>, content_type: &'static str) -> Response {
    let mut response = Response::new(scripted_body(
        steps,
        desk.cancel.clone(),
        desk.book.endless.clone(),
    ));
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
    response
}

/// The pieces of an answer: reasoning first when asked, then the text in chunks of
/// `words_per_chunk` words, or the tool call — its arguments cut in `call_parts` pieces after a first
/// piece with the name (OpenAI streams them so), or whole (`call_parts` 0: Ollama).
pub(crate) fn pieces(
    plan: &super::features::Plan,
    reasoning: bool,
    words_per_chunk: usize,
    call_parts: usize,
) -> Vec<Piece> {
    use super::features::{Plan, REASONING};
    let mut out: Vec<Piece> = Vec::new();
    if reasoning {
        out.extend(REASONING.iter().map(|r| Piece::Reasoning((*r).to_owned())));
    }
    match plan {
        Plan::Text(text) => out.extend(
            super::reply_chunks(text, words_per_chunk)
                .into_iter()
                .map(Piece::Text),
        ),
        Plan::Call(call) if call_parts == 0 => out.push(Piece::Call {
            index: 0,
            name: Some(call.name.clone()),
            arguments: call.arguments.clone(),
        }),
        Plan::Call(call) => {
            out.push(Piece::Call {
                index: 0,
                name: Some(call.name.clone()),
                arguments: String::new(),
            });
            let chars: Vec<char> = call.arguments.chars().collect();
            let size = chars.len().div_ceil(call_parts).max(1);
            out.extend(chars.chunks(size).map(|part| Piece::Call {
                index: 0,
                name: None,
                arguments: part.iter().collect(),
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    /// A wire that names every piece, so a script reads as a list of words.
    struct Named;

    impl Wire for Named {
        const SSE: bool = false;

        fn delta(&self, index: usize, piece: &Piece) -> Step {
            let text = match piece {
                Piece::Text(t) | Piece::Reasoning(t) => t.clone(),
                Piece::Call { arguments, .. } => arguments.clone(),
            };
            Step::Send(Bytes::from(format!("d{index}:{text}")))
        }

        fn gap(&self, steps: &mut Vec<Step>) {
            steps.push(Step::Sleep(Duration::from_millis(1)));
        }

        fn error(&self, code: Option<u16>, message: &str) -> Step {
            Step::Send(Bytes::from(format!("error {code:?}: {message}")))
        }

        fn end(&self, steps: &mut Vec<Step>) {
            steps.push(Step::Send(Bytes::from_static(b"end")));
        }
    }

    fn words(fault: Option<Fault>) -> Vec<String> {
        let chunks = ["a ", "b ", "c"].map(|t| Piece::Text(t.to_owned()));
        script(&Named, Vec::new(), &chunks, fault)
            .into_iter()
            .map(|step| match step {
                Step::Send(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Step::Sleep(_) => "gap".to_owned(),
                Step::Stall => "stall".to_owned(),
                Step::Endless(_) => "endless".to_owned(),
            })
            .collect()
    }

    #[test]
    fn stream_faults_cut_the_deltas_and_replace_the_end() {
        assert_eq!(words(None), ["d0:a ", "gap", "d1:b ", "gap", "d2:c", "end"]);
        assert_eq!(words(Some(Fault::StallAfter(1))), ["d0:a ", "stall"]);
        assert_eq!(
            words(Some(Fault::TruncateAfter(2))),
            ["d0:a ", "gap", "d1:b "]
        );
        assert_eq!(words(Some(Fault::Unterminated { after: 0 })), ["endless"]);
        let error = Fault::MidStreamError {
            after: 1,
            message: "boom".into(),
        };
        assert_eq!(words(Some(error)), ["d0:a ", "error None: boom"]);
        let status = Fault::MidStreamStatus {
            after: 1,
            code: 429,
            message: "slow".into(),
        };
        assert_eq!(words(Some(status)), ["d0:a ", "error Some(429): slow"]);
        // A status fault never reaches the stream; if it did, the stream would end normally.
        assert_eq!(words(Some(Fault::ServerError)).last().unwrap(), "end");
    }
}
