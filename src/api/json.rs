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
    let bytes = body.map_err(|rejection| {
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
    })?;
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
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
    })
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
