//! Decoding a `getUpdates` answer so that one update we cannot read never stops intake: the whole answer
//! is decoded strictly first; if that fails it is decoded again leniently — lone UTF-16 surrogate escapes
//! (`\ud800`, which Telegram can send and serde refuses) become U+FFFD and every update is decoded on its
//! own. An update that still does not decode is skipped with one WARN naming its `update_id`, and the
//! offset moves past it. Bodies and the texts in them are never logged or put into an error.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;
use teloxide::types::{ResponseParameters, Update, UpdateKind};
use teloxide::{ApiError, RequestError};

/// A decoded `getUpdates` answer.
#[derive(Debug, Default)]
pub struct Batch {
    /// The updates that decoded.
    pub updates: Vec<Update>,
    /// The ids of updates that were skipped because they could not be decoded (each already warned).
    pub skipped: Vec<u32>,
    /// The offset that acknowledges every update of the batch, decoded or skipped (`None`: empty batch).
    pub next_offset: Option<i32>,
}

/// Why an answer could not be turned into a [`Batch`].
#[derive(Debug)]
pub enum DecodeError {
    /// Telegram answered `"ok": false`: the error it described.
    Api(RequestError),
    /// The answer is not a Bot API answer at all (what was wrong, without any of the body).
    Unreadable(String),
}

/// The Bot API's answer envelope.
#[derive(Deserialize)]
struct Envelope<T> {
    ok: bool,
    #[serde(default = "Option::default")]
    result: Option<T>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<ResponseParameters>,
}

/// Decodes the body of a `getUpdates` answer.
pub fn decode(body: &[u8]) -> Result<Batch, DecodeError> {
    if let Ok(strict) = serde_json::from_slice::<Envelope<Vec<Update>>>(body) {
        let updates = ok_result(strict)?;
        return Ok(batch(updates.into_iter().map(|u| (Some(u.id.0), Some(u)))));
    }
    // Invalid UTF-8 becomes U+FFFD as well: a text with a broken byte is still worth answering.
    let text = String::from_utf8_lossy(body);
    let repaired = replace_lone_surrogates(&text);
    let lenient: Envelope<Vec<Value>> = serde_json::from_str(&repaired).map_err(|e| {
        // Only the position: serde's message can quote the offending text.
        DecodeError::Unreadable(format!(
            "not a Bot API answer (JSON {:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    let values = ok_result(lenient)?;
    Ok(batch(values.into_iter().map(|value| {
        let id = value
            .get("update_id")
            .and_then(Value::as_u64)
            .and_then(|id| u32::try_from(id).ok());
        // Through text, not `from_value`: teloxide's `UpdateKind` wants borrowed keys, which an owned
        // `Value` cannot lend, so it would decode every update as an error.
        (id, serde_json::from_str::<Update>(&value.to_string()).ok())
    })))
}

/// The `result` of an `"ok": true` answer, or the error an `"ok": false` one describes.
fn ok_result<T>(envelope: Envelope<T>) -> Result<T, DecodeError> {
    if envelope.ok {
        return envelope
            .result
            .ok_or_else(|| DecodeError::Unreadable("an ok answer without a result".into()));
    }
    Err(DecodeError::Api(match envelope.parameters {
        Some(ResponseParameters::RetryAfter(wait)) => RequestError::RetryAfter(wait),
        Some(ResponseParameters::MigrateToChatId(chat)) => RequestError::MigrateToChatId(chat),
        None => {
            let description = envelope.description.unwrap_or_default();
            // teloxide's table of known descriptions; anything else is `ApiError::Unknown`.
            RequestError::Api(
                serde_json::from_value::<ApiError>(Value::String(description.clone()))
                    .unwrap_or(ApiError::Unknown(description)),
            )
        }
    }))
}

/// Collects `(update_id, decoded update)` pairs: an update that did not decode (or that teloxide could
/// only decode as `UpdateKind::Error`) is skipped with one WARN, and the offset still moves past it.
fn batch(items: impl Iterator<Item = (Option<u32>, Option<Update>)>) -> Batch {
    let mut out = Batch::default();
    let mut last: Option<u32> = None;
    for (id, update) in items {
        if let Some(id) = id {
            last = Some(last.map_or(id, |l| l.max(id)));
        }
        match (id, update) {
            (_, Some(update)) if !matches!(update.kind, UpdateKind::Error(_)) => {
                out.updates.push(update);
            }
            (Some(id), _) => {
                tracing::warn!(
                    update_id = id,
                    "telegram: skipping an update that cannot be decoded"
                );
                out.skipped.push(id);
            }
            (None, _) => {
                tracing::warn!("telegram: skipping an update without a readable update_id");
            }
        }
    }
    out.next_offset = last.map(|id| i32::try_from(id).unwrap_or(i32::MAX).saturating_add(1));
    out
}

/// Replaces each `\uXXXX` escape that is a lone UTF-16 surrogate (a high one not followed by a low one,
/// or a low one on its own) with `\ufffd`. Escaped backslashes (`\\ud800` is the literal text
/// `\ud800`) and valid surrogate pairs are left alone.
pub fn replace_lone_surrogates(json: &str) -> Cow<'_, str> {
    let bytes = json.as_bytes();
    if !json.contains("\\u") {
        return Cow::Borrowed(json);
    }
    let hex = |at: usize| -> Option<u16> {
        let digits = json.get(at..at + 4)?;
        u16::from_str_radix(digits, 16).ok()
    };
    let is_high = |u: u16| (0xD800..=0xDBFF).contains(&u);
    let is_low = |u: u16| (0xDC00..=0xDFFF).contains(&u);
    let mut out = String::with_capacity(json.len());
    let (mut i, mut copied) = (0, 0);
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        if bytes.get(i + 1) != Some(&b'u') {
            i += 2; // Any other escape, `\\` included, is two bytes.
            continue;
        }
        let Some(unit) = hex(i + 2) else {
            i += 2;
            continue;
        };
        let pair = is_high(unit)
            && bytes.get(i + 6) == Some(&b'\\')
            && bytes.get(i + 7) == Some(&b'u')
            && hex(i + 8).is_some_and(is_low);
        if pair {
            i += 12;
        } else if is_high(unit) || is_low(unit) {
            out.push_str(&json[copied..i]);
            out.push_str("\\ufffd");
            i += 6;
            copied = i;
        } else {
            i += 6;
        }
    }
    if copied == 0 {
        return Cow::Borrowed(json);
    }
    out.push_str(&json[copied..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(update_id: u32, chat: i64, text: &str) -> String {
        format!(
            r#"{{"update_id":{update_id},"message":{{"message_id":1,"date":1700000000,"chat":{{"id":{chat},"type":"private","first_name":"A"}},"from":{{"id":{chat},"is_bot":false,"first_name":"A"}},"text":"{text}"}}}}"#
        )
    }

    fn answer(updates: &[String]) -> Vec<u8> {
        format!(r#"{{"ok":true,"result":[{}]}}"#, updates.join(",")).into_bytes()
    }

    fn text_of(update: &Update) -> &str {
        match &update.kind {
            UpdateKind::Message(m) => m.text().unwrap_or_default(),
            other => panic!("not a message: {other:?}"),
        }
    }

    #[test]
    fn lone_surrogates_become_replacement_characters_and_the_rest_is_kept() {
        assert_eq!(replace_lone_surrogates(r#""a\ud800b""#), r#""a\ufffdb""#);
        assert_eq!(replace_lone_surrogates(r#""\udc00""#), r#""\ufffd""#);
        assert_eq!(
            replace_lone_surrogates(r#""\ud800\u0041""#),
            r#""\ufffd\u0041""#
        );
        let unchanged = [
            r#""\ud83d\ude00 pair""#,
            r#""literal \\ud800 text""#,
            r#""\u00e9 \n \" \\""#,
            r#""cut \ud8"#,
        ];
        for json in unchanged {
            assert!(
                matches!(replace_lone_surrogates(json), Cow::Borrowed(_)),
                "{json}"
            );
        }
    }

    #[test]
    fn a_clean_batch_decodes_strictly() {
        let batch = decode(&answer(&[message(10, 1, "hi"), message(11, 2, "yo")])).unwrap();
        assert_eq!(batch.updates.len(), 2);
        assert!(batch.skipped.is_empty());
        assert_eq!(batch.next_offset, Some(12));
        let empty = decode(br#"{"ok":true,"result":[]}"#).unwrap();
        assert_eq!(empty.next_offset, None);
    }

    #[test]
    fn a_lone_surrogate_is_repaired_and_a_broken_update_is_skipped_past() {
        let broken = r#"{"update_id":21,"message":{"message_id":"nope","chat":5}}"#.to_owned();
        let body = answer(&[
            message(20, 1, r"half an emoji \ud83d here"),
            broken,
            message(22, 2, "fine"),
        ]);
        assert!(serde_json::from_slice::<Envelope<Vec<Update>>>(&body).is_err());
        let batch = decode(&body).unwrap();
        assert_eq!(batch.updates.len(), 2);
        assert_eq!(text_of(&batch.updates[0]), "half an emoji \u{fffd} here");
        assert_eq!(text_of(&batch.updates[1]), "fine");
        assert_eq!(batch.skipped, [21]);
        assert_eq!(batch.next_offset, Some(23));
    }

    #[test]
    fn error_answers_keep_their_meaning_and_garbage_names_no_content() {
        let conflict = br#"{"ok":false,"error_code":409,"description":"Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"}"#;
        assert!(matches!(
            decode(conflict),
            Err(DecodeError::Api(RequestError::Api(
                ApiError::TerminatedByOtherGetUpdates
            )))
        ));
        let flood = br#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 3","parameters":{"retry_after":3}}"#;
        assert!(matches!(
            decode(flood),
            Err(DecodeError::Api(RequestError::RetryAfter(s))) if s.seconds() == 3
        ));
        let garbage = b"<html>Bad Gateway: secret user text</html>";
        match decode(garbage) {
            Err(DecodeError::Unreadable(what)) => assert!(!what.contains("secret"), "{what}"),
            other => panic!("{other:?}"),
        }
    }
}
