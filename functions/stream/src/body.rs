//! What every wire protocol does with a request body: read it within the size limit, and read
//! JSON whole numbers as JSON Schema counts them.

use axum::extract::Request;
use common::ApiError;
use serde_json::Value;

/// Reads the whole body; more than `limit` bytes is a 413.
pub async fn read_body(request: Request, limit: usize) -> Result<bytes::Bytes, ApiError> {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|e| {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            if too_large {
                ApiError::PayloadTooLarge { limit }
            } else {
                ApiError::invalid("the request body could not be read")
            }
        })
}

pub(crate) trait Classify {
    fn classify_message(&self) -> &'static str;
}

impl Classify for serde_json::Error {
    fn classify_message(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "wrong data",
            serde_json::error::Category::Eof => "unexpected end",
        }
    }
}

/// A JSON whole number, written `2` or `2.0` (JSON Schema's `integer` counts both).
pub(crate) fn whole(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(f))
            .map(|f| f as u64)
    })
}
