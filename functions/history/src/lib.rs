//! `GET /history`: conversations newest first, by offset or by keyset cursor; `DELETE
//! /history/{id}`: one turn gone; and the threads
//! (`GET /threads`, `GET /threads/{id}`, `DELETE /threads/{id}`), the usage report
//! (`GET /usage`) and the playground page (`GET /`), which the history function serves too.

pub mod playground;
pub mod threads;
pub mod usage;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, get};
use common::api::{Page, PageHead, PageParams, fit, page_response};
use common::auth::{Auth, Owner};
use common::error::ErrorBody;
use common::http::{ValidPath, ValidQuery, health_router, protect, with_fallbacks};
use common::store::{
    ConversationList, Cursor, HealthCheck, ThreadStore, TurnDelete, TurnDeleted, UsageReport,
};
use common::{ApiError, Conversation};

/// The `/history` route alone, for merging into the local server.
pub fn routes(list: Arc<dyn ConversationList>) -> Router {
    Router::new()
        .route("/history", get(history))
        .with_state(list)
}

/// The `DELETE /history/{id}` route alone (`GET /history/{id}` is the get function's).
pub fn delete_routes(store: Arc<dyn TurnDelete>) -> Router {
    Router::new()
        .route("/history/{id}", delete(delete_one))
        .with_state(store)
}

/// The function's whole router: `/history`, `DELETE /history/{id}`, the thread routes and
/// `/usage` behind the key check, `/health`, and the playground page (`stream_url`: where its
/// streams go, if elsewhere).
#[allow(clippy::too_many_arguments)]
pub fn router(
    list: Arc<dyn ConversationList>,
    delete: Arc<dyn TurnDelete>,
    threads: Arc<dyn ThreadStore>,
    usage: Arc<dyn UsageReport>,
    health: Arc<dyn HealthCheck>,
    auth: Auth,
    stream_url: Option<&str>,
) -> Router {
    let api = routes(list)
        .merge(delete_routes(delete))
        .merge(threads::routes(threads))
        .merge(usage::routes(usage));
    with_fallbacks(
        protect(api, auth)
            .merge(health_router(health))
            .merge(playground::routes(stream_url)),
    )
}

/// The caller's conversations, newest first (ties by id), by offset or by cursor.
#[utoipa::path(get, path = "/history", tag = "history", params(PageParams), responses(
    (status = 200, description = "One page, newest first: at most `limit` turns and at most \
        5,000,000 bytes (fewer turns then; `next_cursor` goes on)", body = Page<Conversation>),
    (status = 401, description = "Missing or invalid API key", body = ErrorBody),
    (status = 422, description = "A bad limit, offset or cursor", body = ErrorBody),
    (status = 503, description = "The database is unavailable", body = ErrorBody),
))]
pub async fn history(
    State(list): State<Arc<dyn ConversationList>>,
    Extension(owner): Extension<Owner>,
    ValidQuery(params): ValidQuery<PageParams>,
) -> Result<Response, ApiError> {
    let page = params.parse()?;
    let mut listed = list.list(&owner.0, &page).await?;
    // As many as fit in a page's bytes; the cursor goes on after the last one sent.
    let json = fit(&mut listed.items, Conversation::shorten);
    let more = listed.more || json.len() < listed.items.len();
    let next_cursor = match json.len().checked_sub(1) {
        Some(last) if more => Some(Cursor::after(&listed.items[last]).encode()),
        _ => None,
    };
    let head = PageHead {
        limit: page.limit,
        offset: page.offset,
        next_cursor,
    };
    Ok(page_response(&head, json))
}

/// Deletes one of the caller's turns: gone from history, its thread and search. A turn that a
/// later turn continues is refused (409): taking it out of the chain would change what the later
/// answers were given as context, and re-linking them would make the record say they saw what
/// they never saw; delete from the newest end, or the whole thread (`DELETE /threads/{id}`).
/// A thread's only turn takes its thread with it. Its usage stays counted.
#[utoipa::path(delete, path = "/history/{id}", tag = "history",
    params(("id" = Uuid, Path, description = "The turn's id")),
    responses(
        (status = 204, description = "The turn is gone"),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No turn of the caller has this id", body = ErrorBody),
        (status = 409, description = "A later turn continues this one (`turn_continued`), or it \
            is still running (`turn_running`)", body = ErrorBody),
        (status = 422, description = "The id is not a UUID", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    ))]
pub async fn delete_one(
    State(store): State<Arc<dyn TurnDelete>>,
    Extension(owner): Extension<Owner>,
    ValidPath(raw): ValidPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = common::api::parse_id(&raw)?;
    match store.delete_turn(&owner.0, id).await? {
        TurnDeleted::Deleted => Ok(StatusCode::NO_CONTENT),
        TurnDeleted::NotFound => Err(ApiError::NotFound("no conversation with this id")),
        TurnDeleted::Continued => Err(ApiError::Conflict {
            code: "turn_continued",
            message: "later turns continue this one: delete them first (newest first), or \
                      the whole thread with DELETE /threads/{thread_id}"
                .into(),
        }),
        TurnDeleted::Running => Err(ApiError::Conflict {
            code: "turn_running",
            message: "this turn is still running: cancel it (POST /stream/{id}/cancel) or \
                      wait for it to end, then delete it"
                .into(),
        }),
    }
}
