//! `GET /search`: PostgreSQL full-text search over conversations, ranked and highlighted.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, State};
use axum::response::Response;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::ApiError;
use common::api::{Page, PageHead, fit, page_response, parse_limit, parse_offset};
use common::auth::{Auth, Owner};
use common::error::ErrorBody;
use common::http::{ValidQuery, health_router, protect, with_fallbacks};
use common::store::{ConversationSearch, HealthCheck, SearchHit, SearchQuery};
use serde::Deserialize;

/// The longest query accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 500;

#[derive(Clone)]
pub struct SearchState {
    store: Arc<dyn ConversationSearch>,
    candidates: i64,
}

/// The `/search` route alone, for merging into the local server. `candidates`: how many of the
/// newest matches are ranked.
pub fn routes(store: Arc<dyn ConversationSearch>, candidates: i64) -> Router {
    Router::new()
        .route("/search", get(search))
        .with_state(SearchState { store, candidates })
}

/// The function's whole router: `/search` behind the key check, and `/health`.
pub fn router(
    store: Arc<dyn ConversationSearch>,
    candidates: i64,
    health: Arc<dyn HealthCheck>,
    auth: Auth,
) -> Router {
    with_fallbacks(protect(routes(store, candidates), auth).merge(health_router(health)))
}

/// The query string of `/search` (kept as text until parsed, so a bad value gets a clear 422).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Params {
    /// Words as in a web search: `"exact phrase"`, `or`, `-excluded`. Required, not blank, at
    /// most 500 characters.
    #[param(required = true, min_length = 1, max_length = 500)]
    query: Option<String>,
    /// Items per page, 1 to 100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// Items to skip (default 0).
    #[param(value_type = Option<i64>, minimum = 0)]
    offset: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Only conversations created at or after this time: an RFC 3339 time or a date (midnight
    /// UTC); empty is no bound.
    #[param(value_type = Option<String>, pattern = r"^\s*$|^\s*\d{4}-\d{2}-\d{2}([Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2}))?\s*$")]
    from: Option<String>,
    /// Only conversations created before this time: an RFC 3339 time or a date (midnight
    /// UTC); empty is no bound.
    #[param(value_type = Option<String>, pattern = r"^\s*$|^\s*\d{4}-\d{2}-\d{2}([Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2}))?\s*$")]
    to: Option<String>,
}

/// Full-text search over the caller's conversations: the newest `SEARCH_CANDIDATES` matches,
/// ranked, each with a highlighted snippet.
#[utoipa::path(get, path = "/search", tag = "search", params(Params), responses(
    (status = 200, description = "One page of matches, best first: at most `limit` and at most \
        5,000,000 bytes (fewer then; `next_cursor` goes on)", body = Page<SearchHit>),
    (status = 401, description = "Missing or invalid API key", body = ErrorBody),
    (status = 422, description = "A missing or blank query, or a bad limit, offset, cursor, \
        from or to", body = ErrorBody),
    (status = 503, description = "The database is unavailable", body = ErrorBody),
))]
pub async fn search(
    State(state): State<SearchState>,
    Extension(owner): Extension<Owner>,
    ValidQuery(params): ValidQuery<Params>,
) -> Result<Response, ApiError> {
    let query = parse(&params, state.candidates)?;
    let (limit, offset) = (query.limit, query.offset);
    let head = |next_cursor| PageHead {
        limit,
        offset,
        next_cursor,
    };
    if offset >= state.candidates {
        return Ok(page_response(&head(None), Vec::new()));
    }
    let mut found = state.store.search(&owner.0, &query).await?;
    // As many as fit in a page's bytes; the next page starts after the last one sent.
    let json = fit(&mut found.items, |hit: &mut SearchHit, room| {
        hit.conversation
            .shorten(room.saturating_sub(2 * hit.snippet.len() + 64));
    });
    let sent = json.len() as i64;
    let more = (found.more || json.len() < found.items.len()) && offset + sent < state.candidates;
    let next_cursor = more.then(|| URL_SAFE_NO_PAD.encode(format!("o{}", offset + sent)));
    Ok(page_response(&head(next_cursor), json))
}

fn parse(p: &Params, candidates: i64) -> Result<SearchQuery, ApiError> {
    // NUL cannot be sent to PostgreSQL in text; it carries no meaning in a query anyway.
    let text: String = p.query.as_deref().unwrap_or("").replace('\0', " ");
    if text.trim().is_empty() {
        return Err(ApiError::invalid("query is required and must not be blank"));
    }
    if text.chars().count() > MAX_QUERY_CHARS {
        return Err(ApiError::invalid(format!(
            "query must be at most {MAX_QUERY_CHARS} characters"
        )));
    }
    let limit = parse_limit(p.limit.as_deref())?;
    let mut offset = parse_offset(p.offset.as_deref())?;
    if let Some(cursor) = p.cursor.as_deref().filter(|c| !c.is_empty()) {
        offset = decode_cursor(cursor).ok_or_else(|| {
            ApiError::invalid("cursor is not valid: pass next_cursor from a previous page")
        })?;
    }
    Ok(SearchQuery {
        text,
        from: common::api::parse_time("from", p.from.as_deref())?,
        to: common::api::parse_time("to", p.to.as_deref())?,
        limit,
        offset,
        candidates,
    })
}

fn decode_cursor(token: &str) -> Option<i64> {
    let raw = URL_SAFE_NO_PAD.decode(token.as_bytes()).ok()?;
    let raw = std::str::from_utf8(&raw).ok()?;
    raw.strip_prefix('o')?
        .parse()
        .ok()
        .filter(|n: &i64| *n >= 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &str) -> Params {
        Params {
            query: Some(query.into()),
            ..Params::default()
        }
    }

    #[test]
    fn blank_and_missing_queries_are_rejected() {
        assert!(parse(&Params::default(), 1000).is_err());
        assert!(parse(&params("   "), 1000).is_err());
        assert!(parse(&params(&"x".repeat(MAX_QUERY_CHARS + 1)), 1000).is_err());
        assert_eq!(parse(&params("a\0b"), 1000).unwrap().text, "a b");
    }

    #[test]
    fn dates_and_times_are_both_accepted() {
        let mut p = params("x");
        p.from = Some("2025-01-31".into());
        p.to = Some("2025-02-01T12:00:00+02:00".into());
        let q = parse(&p, 1000).unwrap();
        assert_eq!(q.from.unwrap().unix_timestamp(), 1_738_281_600);
        assert!(q.to.is_some());
        p.to = Some("yesterday".into());
        assert!(parse(&p, 1000).is_err());
        for out_of_range in ["-5000-01-01", "0000-01-01", "+10000-01-01"] {
            p.to = Some(out_of_range.into());
            assert!(parse(&p, 1000).is_err(), "{out_of_range}");
        }
    }

    #[test]
    fn cursors_are_offsets_in_disguise() {
        let token = URL_SAFE_NO_PAD.encode("o40");
        assert_eq!(decode_cursor(&token), Some(40));
        assert_eq!(decode_cursor("garbage"), None);
        assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode("o-1")), None);
    }
}
