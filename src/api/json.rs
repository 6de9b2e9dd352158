//! Reading a request body as JSON: 413 beyond `[api].max_body_bytes` (the router's body limit layer
//! enforces it), 400 naming the field for bad JSON or a wrong type (`messages[0].role`), in the
//! surface's error shape.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::{ApiError, Surface};

/// Parses `body` (the extractor's result) into `T`.
pub fn parse<T: DeserializeOwned>(
    surface: Surface,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = read(surface, body)?;
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| field_error(surface, e))
}

/// Parses `body` as any JSON value (for requests whose unknown fields are kept: OpenAI's extras).
pub fn parse_value(
    surface: Surface,
    body: Result<Bytes, BytesRejection>,
) -> Result<serde_json::Value, ApiError> {
    parse(surface, body)
}

/// Reads `T` out of a parsed `value`, naming the field at fault.
pub fn typed<T: DeserializeOwned>(
    surface: Surface,
    value: &serde_json::Value,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| field_error(surface, e))
}

/// The body's bytes, or 413 / 400.
fn read(surface: Surface, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                surface,
                status,
                "the request body is larger than this server accepts (api.max_body_bytes)",
            )
        } else {
            ApiError::new(
                surface,
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            )
        }
    })
}

/// 400 naming the field of a deserialization error.
fn field_error<E: std::fmt::Display>(
    surface: Surface,
    e: serde_path_to_error::Error<E>,
) -> ApiError {
    {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // serde's messages name types and the expected shape, never the body's content beyond a
        // short unexpected value; the position helps with hand-written curl bodies.
        let message = if path == "." {
            format!("invalid JSON body: {inner}")
        } else {
            format!("invalid field `{path}`: {inner}")
        };
        ApiError::bad_field(surface, if path == "." { "body" } else { &path }, message)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Req {
        model: String,
        messages: Vec<Msg>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Msg {
        role: crate::domain::Role,
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        let body = Bytes::from_static(br#"{"model": "m", "messages": [{"role": 5}]}"#);
        let e = parse::<Req>(Surface::OpenAi, Ok(body)).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        assert!(e.message.contains("messages[0].role"), "{}", e.message);
    }

    #[test]
    fn broken_json_and_a_missing_field_are_400() {
        let e = parse::<Req>(Surface::Ollama, Ok(Bytes::from_static(b"{\"model\": "))).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = parse::<Req>(
            Surface::Ollama,
            Ok(Bytes::from_static(b"{\"model\": \"m\"}")),
        )
        .unwrap_err();
        assert!(e.message.contains("messages"), "{}", e.message);
    }
}
