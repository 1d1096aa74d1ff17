//! OpenAI-style error responses: `{"error": {"message", "type", "param", "code"}}` with the
//! HTTP status that goes with them, so clients' error handling works unchanged.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
    /// Seconds for a `Retry-After` header (a full queue).
    pub retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self { status, kind, message: message.into(), param: None, code: None, retry_after: None }
    }

    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self { param, ..Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message) }
    }

    pub fn context_length(message: impl Into<String>) -> Self {
        Self { param: Some("messages"), code: Some("context_length_exceeded"), ..Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message) }
    }

    pub fn unauthorized() -> Self {
        Self { code: Some("invalid_api_key"), ..Self::new(StatusCode::UNAUTHORIZED, "invalid_request_error", "incorrect or missing API key (send Authorization: Bearer KEY)") }
    }

    /// The whole response as bytes, for the places that write HTTP themselves (a refused
    /// connection, an answer to a request the HTTP parser rejected).
    pub fn raw_response(&self) -> Vec<u8> {
        let body = self.body().to_string();
        let reason = self.status.canonical_reason().unwrap_or("Error");
        let mut head = format!("HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n", self.status.as_u16(), body.len());
        if let Some(s) = self.retry_after {
            head.push_str(&format!("retry-after: {s}\r\n"));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(body.as_bytes());
        out
    }

    pub fn model_not_found(name: &str, served: &str) -> Self {
        Self {
            param: Some("model"),
            code: Some("model_not_found"),
            ..Self::new(StatusCode::NOT_FOUND, "invalid_request_error", format!("the model {name:?} does not exist; this server serves {served:?}"))
        }
    }

    pub fn queue_full(waiting: usize) -> Self {
        Self {
            retry_after: Some(1),
            code: Some("rate_limit_exceeded"),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", format!("the server is busy: {waiting} requests are already waiting; retry shortly"))
        }
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", format!("the request body is larger than {limit} bytes"))
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self { retry_after: Some(5), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message) }
    }

    pub fn timeout() -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout", "the request took longer than the server's per-request timeout")
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    pub fn not_found(path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", format!("no such endpoint: {path}"))
    }

    pub fn method_not_allowed(method: &str, path: &str, allowed: &str) -> Self {
        let also = if allowed.is_empty() { String::new() } else { format!("; use {allowed}") };
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", format!("{method} is not allowed on {path}{also}"))
    }

    pub fn body_timeout(limit: std::time::Duration) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, "invalid_request_error", format!("the request body did not arrive within {} s", limit.as_secs_f64()))
    }

    pub fn too_many_connections(limit: usize) -> Self {
        Self { retry_after: Some(1), ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", format!("the server has {limit} connections open, its limit; retry shortly")) }
    }

    /// The error for a status produced below the handlers (the router, the HTTP parser), with
    /// no more to say than the status itself.
    pub fn from_status(status: StatusCode, path: &str) -> Self {
        let what = match status.as_u16() {
            400 => "the request is not valid HTTP".to_string(),
            404 => return Self::not_found(path),
            408 => "the request did not arrive in time".to_string(),
            413 => "the request body is too large".to_string(),
            414 => "the request URI is too long".to_string(),
            431 => "the request's header fields are too large".to_string(),
            _ => format!("the request failed: {}", status.canonical_reason().unwrap_or("error")),
        };
        let kind = if status.is_server_error() { "server_error" } else { "invalid_request_error" };
        Self::new(status, kind, what)
    }

    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}
