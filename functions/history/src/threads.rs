//! `GET /threads`, `GET /threads/{id}`, `DELETE /threads/{id}`: the caller's threads by latest
//! activity, one thread with every turn (branches included), and deleting one.

use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use common::api::{fit, page_response, parse_cursor, parse_limit};
use common::auth::Owner;
use common::domain::Thread;
use common::error::ErrorBody;
use common::http::{ValidPath, ValidQuery};
use common::store::{Cursor, PageQuery, ThreadStore};
use common::{ApiError, Conversation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The thread routes alone, for merging into the local server.
pub fn routes(store: Arc<dyn ThreadStore>) -> Router {
    Router::new()
        .route("/threads", get(list))
        .route("/threads/{id}", get(one).delete(delete))
        .with_state(store)
}

/// The query string of `GET /threads` and `GET /threads/{id}`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ThreadParams {
    /// Threads per page, 1 to 100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// One page of threads, most recently active first.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ThreadPage {
    pub items: Vec<Thread>,
    pub limit: i64,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A thread and a page of its turns, oldest first; each turn names the turn it continues
/// (`previous_id`), so the branches can be drawn.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ThreadTurns {
    pub thread: Thread,
    pub items: Vec<Conversation>,
    pub limit: i64,
    /// Pass as `cursor` for the next turns; null after the last.
    pub next_cursor: Option<String>,
}

/// The fields of [`ThreadTurns`] other than its items.
#[derive(Serialize)]
struct ThreadHead {
    thread: Thread,
    limit: i64,
    next_cursor: Option<String>,
}

impl ThreadParams {
    /// `limit` 1..=100 (default 20) and `cursor` (a `next_cursor`).
    fn page(&self) -> Result<PageQuery, ApiError> {
        let after = parse_cursor(self.cursor.as_deref())?;
        Ok(PageQuery {
            limit: parse_limit(self.limit.as_deref())?,
            offset: 0,
            after,
        })
    }
}

fn thread_id(raw: &str) -> Result<Uuid, ApiError> {
    common::api::parse_id(raw)
}

/// The caller's threads, most recently active first (ties by id).
#[utoipa::path(get, path = "/threads", tag = "threads", params(ThreadParams), responses(
    (status = 200, description = "One page, most recently active first", body = ThreadPage),
    (status = 401, description = "Missing or invalid API key", body = ErrorBody),
    (status = 422, description = "A bad limit or cursor", body = ErrorBody),
    (status = 503, description = "The database is unavailable", body = ErrorBody),
))]
pub async fn list(
    State(store): State<Arc<dyn ThreadStore>>,
    Extension(owner): Extension<Owner>,
    ValidQuery(params): ValidQuery<ThreadParams>,
) -> Result<Json<ThreadPage>, ApiError> {
    let page = params.page()?;
    let limit = page.limit;
    let listed = store.threads(&owner.0, &page).await?;
    let next_cursor = if listed.more {
        listed.items.last().map(|t| {
            Cursor {
                created_at: t.updated_at,
                id: t.id,
            }
            .encode()
        })
    } else {
        None
    };
    Ok(Json(ThreadPage {
        items: listed.items,
        limit,
        next_cursor,
    }))
}

/// One of the caller's threads with a page of its turns, oldest first.
#[utoipa::path(get, path = "/threads/{id}", tag = "threads",
    params(("id" = Uuid, Path, description = "The thread's id (its first turn's)"), ThreadParams),
    responses(
        (status = 200, description = "The thread and a page of its turns, oldest first: at most \
            `limit` and at most 5,000,000 bytes (`next_cursor` goes on)", body = ThreadTurns),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No thread of the caller has this id", body = ErrorBody),
        (status = 422, description = "The id is not a UUID, or a bad limit or cursor",
            body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    ))]
pub async fn one(
    State(store): State<Arc<dyn ThreadStore>>,
    Extension(owner): Extension<Owner>,
    ValidPath(raw): ValidPath<String>,
    ValidQuery(params): ValidQuery<ThreadParams>,
) -> Result<Response, ApiError> {
    let id = thread_id(&raw)?;
    let page = params.page()?;
    // A thread whose first turn started moments ago may not have its row yet.
    let (thread, mut turns) = common::young::awaiting_row(id, || store.thread(&owner.0, id, &page))
        .await?
        .ok_or(ApiError::NotFound("no thread with this id"))?;
    let json = fit(&mut turns.items, Conversation::shorten);
    let more = turns.more || json.len() < turns.items.len();
    let next_cursor = match json.len().checked_sub(1) {
        Some(last) if more => Some(Cursor::after(&turns.items[last]).encode()),
        _ => None,
    };
    let head = ThreadHead {
        thread,
        limit: page.limit,
        next_cursor,
    };
    Ok(page_response(&head, json))
}

/// Deletes one of the caller's threads and every turn of it: gone from history, search and the
/// search index. A turn of it still running stops at its next checkpoint and is not saved.
#[utoipa::path(delete, path = "/threads/{id}", tag = "threads",
    params(("id" = Uuid, Path, description = "The thread's id (its first turn's)")),
    responses(
        (status = 204, description = "The thread and its turns are gone"),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No thread of the caller has this id", body = ErrorBody),
        (status = 422, description = "The id is not a UUID", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    ))]
pub async fn delete(
    State(store): State<Arc<dyn ThreadStore>>,
    Extension(owner): Extension<Owner>,
    ValidPath(raw): ValidPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = thread_id(&raw)?;
    if store.delete_thread(&owner.0, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("no thread with this id"))
    }
}
