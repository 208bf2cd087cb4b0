//! Request parameters and response shapes shared by the list endpoints (`/history`, `/search`).

use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::store::{Cursor, PageQuery};

/// Default and largest page sizes.
pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

/// The raw page parameters as they arrive in the query string; validated by [`PageParams::parse`].
/// `limit`, `offset` and `cursor`, kept as text until [`PageParams::parse`] so that a bad value
/// gets a 422 that says which.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1 to 100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// Items to skip (default 0).
    #[param(value_type = Option<i64>, minimum = 0)]
    pub offset: Option<String>,
    /// `next_cursor` of the previous page: the page after it (keyset; faster than `offset`).
    pub cursor: Option<String>,
}

impl PageParams {
    /// Validates `limit` (1..=100, default 20), `offset` (>= 0) and `cursor` (a token from a
    /// previous page).
    pub fn parse(&self) -> Result<PageQuery, ApiError> {
        let limit = parse_limit(self.limit.as_deref())?;
        let offset = parse_offset(self.offset.as_deref())?;
        let after = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(raw) => Some(Cursor::decode(raw).ok_or_else(|| {
                ApiError::invalid("cursor is not valid: pass next_cursor from a previous page")
            })?),
        };
        Ok(PageQuery {
            limit,
            offset,
            after,
        })
    }
}

/// `limit`: 1..=100, default 20.
pub fn parse_limit(raw: Option<&str>) -> Result<i64, ApiError> {
    match raw.map(str::trim).filter(|r| !r.is_empty()) {
        None => Ok(DEFAULT_LIMIT),
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "limit must be a whole number from 1 to {MAX_LIMIT}"
                ))
            }),
    }
}

/// `offset`: 0 or more, default 0.
pub fn parse_offset(raw: Option<&str>) -> Result<i64, ApiError> {
    match raw.map(str::trim).filter(|r| !r.is_empty()) {
        None => Ok(0),
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| ApiError::invalid("offset must be a whole number, 0 or more")),
    }
}

/// One page of a list: `{"items", "limit", "offset", "next_cursor"}`.
/// One page of results, newest first.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub limit: i64,
    pub offset: i64,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(limit: Option<&str>, offset: Option<&str>, cursor: Option<&str>) -> PageParams {
        PageParams {
            limit: limit.map(Into::into),
            offset: offset.map(Into::into),
            cursor: cursor.map(Into::into),
        }
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(params(None, None, None).parse().unwrap().limit, 20);
        assert_eq!(params(Some("1"), None, None).parse().unwrap().limit, 1);
        assert_eq!(params(Some("100"), None, None).parse().unwrap().limit, 100);
        for bad in ["0", "101", "-1", "ten", "1.5", "99999999999999999999"] {
            assert!(params(Some(bad), None, None).parse().is_err(), "{bad}");
        }
    }

    #[test]
    fn offsets_and_cursors_are_checked() {
        assert_eq!(params(None, Some("40"), None).parse().unwrap().offset, 40);
        assert!(params(None, Some("-1"), None).parse().is_err());
        assert!(params(None, None, Some("garbage")).parse().is_err());
    }
}
