//! Errors: the store's, and the one API error that maps to status codes and the JSON error body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A failure of a store backend. Keeps its source for the logs.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("could not get a database connection")]
    Pool(#[source] deadpool_postgres::PoolError),
    #[error("database query failed")]
    Query(#[source] tokio_postgres::Error),
    #[error("database returned an unexpected value in column {column}")]
    Decode { column: &'static str },
    #[error("migration failed")]
    Migrate(#[source] refinery::Error),
    #[error("SEARCH_CONFIG names no text search configuration in the database: {0}")]
    UnknownSearchConfig(String),
    /// The last health check, moments ago, failed (see `CachedHealth`).
    #[error("the database was unavailable at the last check")]
    Cached,
    /// The database did not answer within the call's time (connection included).
    #[error("the database did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// A call to the RDS Data API failed; `unavailable` when the database or the service could
    /// not answer (as opposed to a statement it rejected).
    #[error("Data API call failed: {message}")]
    DataApi { message: String, unavailable: bool },
}

impl StoreError {
    /// True when the database could not be reached at all (as opposed to a query it rejected).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Pool(_) | StoreError::Timeout(_) | StoreError::Cached => true,
            StoreError::Query(e) => e.is_closed() || e.code().is_none_or(is_transient),
            StoreError::DataApi { unavailable, .. } => *unavailable,
            StoreError::Decode { .. }
            | StoreError::Migrate(_)
            | StoreError::UnknownSearchConfig(_) => false,
        }
    }
}

/// SQLSTATEs that say the server, not the statement, is the problem: connection exceptions
/// (class 08), a server shutting down, restarting or starting (57P01-57P03), out of resources
/// (class 53), and a statement cancelled by its timeout (57014).
fn is_transient(code: &tokio_postgres::error::SqlState) -> bool {
    let c = code.code();
    c.starts_with("08") || c.starts_with("53") || matches!(c, "57P01" | "57P02" | "57P03" | "57014")
}

/// What a client may be told. Every variant maps to one status and one stable code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Validation { code: &'static str, message: String },
    #[error("{0}")]
    NotFound(&'static str),
    /// A `model` the service does not serve (`LLM_MODELS`, or later the routes).
    #[error("the model `{0}` does not exist or you do not have access to it")]
    ModelNotFound(String),
    /// The request is valid but conflicts with the state of what it names.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error(
        "missing or invalid API key: send the header Authorization: Bearer <key> \
         (make a key with `make key OWNER=<name>`)"
    )]
    Unauthorized,
    /// A key's limit refuses the request (`rate_limited`, `budget_exceeded`): a 429 with
    /// `Retry-After`.
    #[error("{message}")]
    Limited {
        code: &'static str,
        message: String,
        retry_after: u32,
    },
    #[error("the database is unavailable")]
    Unavailable(#[source] StoreError),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// A 422 with code `invalid_request`.
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::Validation {
            code: "invalid_request",
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) | ApiError::ModelNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Limited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Validation { code, .. } => code,
            ApiError::NotFound(_) => "not_found",
            ApiError::ModelNotFound(_) => "model_not_found",
            ApiError::Conflict { code, .. } => code,
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Limited { code, .. } => code,
            ApiError::Unavailable(_) => "database_unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            ApiError::Unavailable(e)
        } else {
            ApiError::Internal(Box::new(e))
        }
    }
}

/// The JSON error body: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, snake_case: `invalid_request`, `not_found`, `unauthorized`, ...
    pub code: String,
    /// A sentence for people.
    pub message: String,
}

/// OpenAI's error object, which every `/v1` error takes: `{"error": {"message", "type",
/// "param", "code"}}`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct OpenAiError {
    pub error: OpenAiErrorDetail,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct OpenAiErrorDetail {
    /// A sentence for people.
    pub message: String,
    /// `invalid_request_error` (client errors, 401 and 404 included, as OpenAI has it) or
    /// `server_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    /// Stable, snake_case: `invalid_api_key`, `model_not_found`, `unsupported_value`, ...
    pub code: Option<String>,
}

impl OpenAiError {
    pub fn new(kind: &str, code: &str, message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            error: OpenAiErrorDetail {
                message: message.into(),
                kind: kind.to_owned(),
                param: param.map(str::to_owned),
                code: Some(code.to_owned()),
            },
        }
    }

    /// The `type` OpenAI gives an error of HTTP `status`.
    pub fn kind_for(status: u16) -> &'static str {
        if status >= 500 {
            "server_error"
        } else {
            "invalid_request_error"
        }
    }

    /// This service's error body as OpenAI's (`unauthorized` becomes `invalid_api_key`, as
    /// OpenAI names it).
    /// A key's limits become OpenAI's rate limit (`rate_limit_error`, `rate_limit_exceeded`)
    /// and, for a budget, its exhausted quota (`insufficient_quota`, type and code).
    pub fn from_body(status: u16, body: &ErrorBody) -> Self {
        let (kind, code) = match body.error.code.as_str() {
            "unauthorized" => (Self::kind_for(status), "invalid_api_key"),
            "rate_limited" => ("rate_limit_error", "rate_limit_exceeded"),
            "budget_exceeded" => ("insufficient_quota", "insufficient_quota"),
            other => (Self::kind_for(status), other),
        };
        Self::new(kind, code, body.error.message.clone(), None)
    }
}

/// Builds an error response from a status, code and client-safe message.
pub fn error_response(status: StatusCode, code: &'static str, message: &str) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: message.to_owned(),
        },
    };
    let mut response = (status, axum::Json(body)).into_response();
    response
        .extensions_mut()
        .insert(crate::telemetry::ErrorCode(code));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %error_chain(&self), code = self.code(), "request failed");
        }
        let mut response = error_response(status, self.code(), &self.to_string());
        if let ApiError::Limited { retry_after, .. } = self {
            let headers = response.headers_mut();
            headers.insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(retry_after.max(1)),
            );
            // OpenAI's SDKs retry a 429 unless told not to: a refusal no retry can pass within
            // a minute (a budget spent until its period ends) tells them.
            if retry_after > 60 {
                headers.insert(
                    "x-should-retry",
                    axum::http::HeaderValue::from_static("false"),
                );
            }
        }
        response
    }
}

/// The whole cause chain of an error on one line, for logs only.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_never_show_their_source() {
        let inner = std::io::Error::other("password=hunter2 at 10.0.0.1");
        let err = ApiError::Internal(Box::new(inner));
        assert_eq!(err.to_string(), "internal error");
        assert!(error_chain(&err).contains("hunter2"));
    }
}
