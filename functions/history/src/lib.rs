//! `GET /history`: conversations newest first, by offset or by keyset cursor; and the threads
//! (`GET /threads`, `GET /threads/{id}`, `DELETE /threads/{id}`), the usage report
//! (`GET /usage`) and the playground page (`GET /`), which the history function serves too.

pub mod playground;
pub mod threads;
pub mod usage;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, State};
use axum::response::Response;
use axum::routing::get;
use common::api::{Page, PageHead, PageParams, fit, page_response};
use common::auth::{Auth, Owner};
use common::error::ErrorBody;
use common::http::{ValidQuery, health_router, protect, with_fallbacks};
use common::store::{ConversationList, Cursor, HealthCheck, ThreadStore, UsageReport};
use common::{ApiError, Conversation};

/// The `/history` route alone, for merging into the local server.
pub fn routes(list: Arc<dyn ConversationList>) -> Router {
    Router::new()
        .route("/history", get(history))
        .with_state(list)
}

/// The function's whole router: `/history`, the thread routes and `/usage` behind the key check,
/// `/health`, and the playground page (`stream_url`: where its streams go, if elsewhere).
pub fn router(
    list: Arc<dyn ConversationList>,
    threads: Arc<dyn ThreadStore>,
    usage: Arc<dyn UsageReport>,
    health: Arc<dyn HealthCheck>,
    auth: Auth,
    stream_url: Option<&str>,
) -> Router {
    let api = routes(list)
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
