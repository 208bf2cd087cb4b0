//! Request parameters and response shapes shared by the list endpoints (`/history`, `/search`,
//! a thread's turns), and the byte cap every page and single turn keeps to.

use axum::response::IntoResponse;
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
        let after = parse_cursor(self.cursor.as_deref())?;
        Ok(PageQuery {
            limit,
            offset,
            after,
        })
    }
}

/// `cursor`: a `next_cursor` a page gave (empty or absent: from the start).
pub fn parse_cursor(raw: Option<&str>) -> Result<Option<Cursor>, ApiError> {
    match raw {
        None | Some("") => Ok(None),
        Some(raw) => Cursor::decode(raw).map(Some).ok_or_else(|| {
            ApiError::invalid("cursor is not valid: pass next_cursor from a previous page")
        }),
    }
}

/// A path's id: a UUID, or a 422 saying what one looks like.
pub fn parse_id(raw: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::try_parse(raw).map_err(|_| {
        ApiError::invalid("id must be a UUID such as 0193a4c2-7f1e-7c3a-9b2d-5e8f1a2b3c4d")
    })
}

/// A query's time: an RFC 3339 timestamp or a plain date (midnight UTC), within the years both
/// stores take; empty is none. A 422 naming `name` otherwise.
pub fn parse_time(name: &str, raw: Option<&str>) -> Result<Option<time::OffsetDateTime>, ApiError> {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
        .ok()
        .or_else(|| {
            time::Date::parse(raw, &format)
                .ok()
                .map(|d| d.midnight().assume_utc())
        })
        .filter(|t| crate::store::storable_time(*t))
        .map(Some)
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "{name} must be a date (2025-01-31) or an RFC 3339 time (2025-01-31T12:00:00Z) \
                 from year 1 to 9999"
            ))
        })
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

/// The most a page's body holds (history, search, a thread's turns, one turn): the functions
/// that serve them answer through Lambda's buffered responses, which stop at 6 MB (API Gateway
/// answers 5xx beyond).
pub const MAX_PAGE_BYTES: usize = 5_000_000;

/// Room kept for the rest of a page's body (its other fields).
const PAGE_RESERVE: usize = 4096;

/// The JSON of `items`, in order, as many as fit in [`MAX_PAGE_BYTES`]; the first is always
/// kept, shortened by `shorten` (given the bytes it may take) when it alone is larger. The page
/// holds the first `n` items, `n` the length returned; its cursor goes on after the `n`th.
pub fn fit<T: Serialize>(items: &mut [T], shorten: impl Fn(&mut T, usize)) -> Vec<Vec<u8>> {
    let budget = MAX_PAGE_BYTES - PAGE_RESERVE;
    let mut out = Vec::with_capacity(items.len());
    let mut used = 0;
    for (i, item) in items.iter_mut().enumerate() {
        let mut json = serde_json::to_vec(item).unwrap_or_default();
        if i == 0 && json.len() > budget {
            shorten(item, budget);
            json = serde_json::to_vec(item).unwrap_or_default();
        }
        if i > 0 && used + json.len() + 1 > budget {
            break;
        }
        used += json.len() + 1;
        out.push(json);
    }
    out
}

/// A `200` JSON response: the object `head` with the field `items` added last, holding `items`
/// (each already JSON, from [`fit`]).
pub fn page_response(head: &impl Serialize, items: Vec<Vec<u8>>) -> axum::response::Response {
    let mut body = serde_json::to_vec(head).unwrap_or_else(|_| b"{}".to_vec());
    body.pop(); // the closing brace
    if body.len() > 1 {
        body.push(b',');
    }
    body.extend_from_slice(b"\"items\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(b"]}");
    (
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// The fields of a list page other than its items.
#[derive(Debug, Serialize)]
pub struct PageHead {
    pub limit: i64,
    pub offset: i64,
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
    fn a_page_keeps_what_fits_and_shortens_a_first_item_too_large_alone() {
        let big = "x".repeat(MAX_PAGE_BYTES / 3);
        let mut items = vec![big.clone(), big.clone(), big.clone(), big];
        let json = fit(&mut items, |_, _| unreachable!());
        assert_eq!(json.len(), 2);
        let mut huge = vec!["y".repeat(MAX_PAGE_BYTES * 2), "z".into()];
        let json = fit(&mut huge, |s: &mut String, room| s.truncate(room - 2));
        assert_eq!(json.len(), 1);
        assert!(json[0].len() <= MAX_PAGE_BYTES);
        let body = page_response(
            &PageHead {
                limit: 2,
                offset: 0,
                next_cursor: None,
            },
            vec![b"1".to_vec(), b"2".to_vec()],
        );
        assert_eq!(body.status(), 200);
    }

    #[test]
    fn offsets_and_cursors_are_checked() {
        assert_eq!(params(None, Some("40"), None).parse().unwrap().offset, 40);
        assert!(params(None, Some("-1"), None).parse().is_err());
        assert!(params(None, None, Some("garbage")).parse().is_err());
    }
}
