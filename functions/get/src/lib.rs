//! `GET /history/{id}`: one conversation.

use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::routing::get;
use axum::{Json, Router};
use common::auth::{Auth, Owner};
use common::error::ErrorBody;
use common::http::{ValidPath, health_router, protect, with_fallbacks};
use common::store::{ConversationGet, HealthCheck};
use common::{ApiError, Conversation};

/// The `/history/{id}` route alone, for merging into the local server.
pub fn routes(store: Arc<dyn ConversationGet>) -> Router {
    Router::new()
        .route("/history/{id}", get(get_one))
        .with_state(store)
}

/// The function's whole router: `/history/{id}` behind the key check, and `/health`.
pub fn router(store: Arc<dyn ConversationGet>, health: Arc<dyn HealthCheck>, auth: Auth) -> Router {
    with_fallbacks(protect(routes(store), auth).merge(health_router(health)))
}

/// One of the caller's conversations.
#[utoipa::path(get, path = "/history/{id}", tag = "history",
    params(("id" = Uuid, Path, description = "The conversation's id")),
    responses(
        (status = 200, description = "The conversation (an answer too long for 5,000,000 bytes \
            is cut and marked `truncated`: `GET /stream/{id}` streams it whole)",
            body = Conversation),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No conversation of the caller has this id", body = ErrorBody),
        (status = 422, description = "The id is not a UUID", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    ))]
pub async fn get_one(
    State(store): State<Arc<dyn ConversationGet>>,
    Extension(owner): Extension<Owner>,
    ValidPath(raw): ValidPath<String>,
) -> Result<Json<Conversation>, ApiError> {
    let id = common::api::parse_id(&raw)?;
    // A turn whose `start` named it moments ago may not have its row yet.
    let mut turn = common::young::awaiting_row(id, || store.get(&owner.0, id))
        .await?
        .ok_or(ApiError::NotFound("no conversation with this id"))?;
    // Within what a buffered Lambda response holds (an answer longer than that is cut and
    // marked `truncated`; GET /stream/{id} streams it whole).
    turn.shorten(common::api::MAX_PAGE_BYTES);
    Ok(Json(turn))
}
