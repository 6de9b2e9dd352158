//! Errors as each surface shows them: Ollama's `{"error": "..."}` and OpenAI's `{"error": {"message",
//! "type", "param", "code"}}`, with the status a client acts on and, for rate limits, `Retry-After`.
//! Messages come from [`UserFacingError`] or from switchboard itself: never a provider's raw body, URL
//! or key.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::domain::{FailureKind, UserFacingError};

/// A wait longer than this is not worth an SDK's automatic retries (openai-python retries 429 twice):
/// the response says `x-should-retry: false`, so the client gives up at once and the caller decides.
pub const LONG_WAIT: Duration = Duration::from_secs(60);

/// Which API a request came in on: decides the error body's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    /// `/api/*` and `/`: Ollama's shapes.
    Ollama,
    /// `/v1/*`: OpenAI's shapes.
    OpenAi,
    /// `/health`, `/metrics`: switchboard's own (Ollama's simple shape).
    Operator,
}

impl Surface {
    /// The surface a path belongs to.
    pub fn of_path(path: &str) -> Self {
        if path.starts_with("/v1/") || path == "/v1" {
            Self::OpenAi
        } else if path == "/health" || path == "/metrics" {
            Self::Operator
        } else {
            Self::Ollama
        }
    }

    /// The label used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ollama => "ollama",
            Self::OpenAi => "openai",
            Self::Operator => "operator",
        }
    }
}

/// An error response before any byte of the answer was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The surface whose shape the body takes.
    pub surface: Surface,
    /// The HTTP status.
    pub status: StatusCode,
    /// A sentence safe to show anyone.
    pub message: String,
    /// The request field at fault (OpenAI `param`), if one.
    pub param: Option<String>,
    /// When asking again may succeed (sent as `Retry-After`).
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(surface: Surface, status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            surface,
            status,
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }

    /// 400 naming the field at fault.
    pub fn bad_field(surface: Surface, field: &str, message: impl Into<String>) -> Self {
        let mut e = Self::new(surface, StatusCode::BAD_REQUEST, message);
        e.param = Some(field.to_owned());
        e
    }

    /// 404 for a model name that is neither virtual, an alias nor served by any tier.
    pub fn unknown_model(surface: Surface, model: &str) -> Self {
        let mut e = Self::new(
            surface,
            StatusCode::NOT_FOUND,
            format!("model '{model}' not found; GET /v1/models or /api/tags lists the models here"),
        );
        e.param = Some("model".into());
        e
    }

    /// The status a router failure before the first byte gets.
    pub fn from_failure(surface: Surface, failure: &UserFacingError) -> Self {
        let status = match failure.kind {
            FailureKind::UnknownModel => StatusCode::NOT_FOUND,
            FailureKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            FailureKind::BadRequest => StatusCode::BAD_REQUEST,
            FailureKind::Refused => StatusCode::FORBIDDEN,
            FailureKind::Interrupted => StatusCode::BAD_GATEWAY,
            FailureKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            FailureKind::Unavailable | FailureKind::Cancelled | FailureKind::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        let mut e = Self::new(surface, status, failure.message.clone());
        e.retry_after = failure.retry_after;
        e
    }

    /// OpenAI's `type` for this status.
    pub fn openai_type(&self) -> &'static str {
        openai_type(self.status)
    }

    /// A short machine-readable code (OpenAI `code`, a string).
    pub fn code(&self) -> &'static str {
        code(self.status)
    }

    /// The body in this error's surface shape.
    pub fn body(&self) -> serde_json::Value {
        match self.surface {
            Surface::OpenAi => json!({"error": {
                "message": self.message,
                "type": self.openai_type(),
                "param": self.param,
                "code": self.code(),
            }}),
            Surface::Ollama | Surface::Operator => json!({"error": self.message}),
        }
    }
}

/// OpenAI's error `type` by status.
fn openai_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 404 | 413 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        _ => "api_error",
    }
}

/// A short code by status.
fn code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request",
        401 => "invalid_api_key",
        403 => "permission_denied",
        404 => "model_not_found",
        413 => "request_too_large",
        429 => "rate_limit_exceeded",
        501 => "not_implemented",
        502 => "upstream_error",
        503 => "service_unavailable",
        504 => "timeout",
        _ => "internal_error",
    }
}

/// An error event sent after the answer began, in the surface's shape: the status is already sent,
/// so the body says it (openai-python and ollama-python both raise on it).
pub fn in_stream_body(surface: Surface, failure: &UserFacingError) -> serde_json::Value {
    let as_status = ApiError::from_failure(surface, failure);
    as_status.body()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(wait) = self.retry_after {
            let headers = response.headers_mut();
            // Whole seconds, rounded up: a client that waits exactly this long finds the limit reset.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            headers.insert("retry-after", HeaderValue::from(secs.max(1)));
            let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            headers.insert("retry-after-ms", HeaderValue::from(ms));
            if wait > LONG_WAIT {
                headers.insert("x-should-retry", HeaderValue::from_static("false"));
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_kind_gets_its_status() {
        let cases = [
            (FailureKind::UnknownModel, 404),
            (FailureKind::RateLimited, 429),
            (FailureKind::BadRequest, 400),
            (FailureKind::Refused, 403),
            (FailureKind::Interrupted, 502),
            (FailureKind::Internal, 500),
            (FailureKind::Unavailable, 503),
            (FailureKind::ShuttingDown, 503),
        ];
        for (kind, status) in cases {
            let e = ApiError::from_failure(Surface::OpenAi, &UserFacingError::new(kind, "x"));
            assert_eq!(e.status.as_u16(), status, "{kind:?}");
        }
    }

    #[test]
    fn bodies_take_each_surface_shape() {
        let e = ApiError::bad_field(Surface::OpenAi, "messages[0].role", "bad role");
        assert_eq!(
            e.body(),
            json!({"error": {"message": "bad role", "type": "invalid_request_error",
                "param": "messages[0].role", "code": "invalid_request"}})
        );
        let e = ApiError::bad_field(Surface::Ollama, "messages[0].role", "bad role");
        assert_eq!(e.body(), json!({"error": "bad role"}));
    }

    #[test]
    fn a_long_wait_says_retry_after_and_not_to_retry() {
        let failure = UserFacingError::new(FailureKind::RateLimited, "free quota spent")
            .retry_after(Duration::from_secs(3600));
        let r = ApiError::from_failure(Surface::OpenAi, &failure).into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["retry-after"], "3600");
        assert_eq!(r.headers()["x-should-retry"], "false");
        let short = UserFacingError::new(FailureKind::RateLimited, "per minute")
            .retry_after(Duration::from_millis(2500));
        let r = ApiError::from_failure(Surface::OpenAi, &short).into_response();
        assert_eq!(r.headers()["retry-after"], "3");
        assert!(r.headers().get("x-should-retry").is_none());
    }
}
