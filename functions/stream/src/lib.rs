//! The stream function: `POST /stream` and its re-attach and cancel routes (the native SSE API,
//! [`native`]), OpenAI's Chat Completions ([`openai`]), both over one protocol-free [`engine`]
//! that generates each turn, saves it whatever happens and lets any process follow it. A new
//! wire protocol is one more module beside them.

mod body;
pub mod engine;
pub mod export;
pub mod native;
pub mod openai;
pub mod responses;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use common::auth::Auth;
use common::http::{health_router, protect, with_fallbacks};
use common::store::{ConversationExport, HealthCheck};

pub use engine::{Limits, RequestParts, StreamState, StreamStore};
pub use native::request::StreamRequest;
pub use native::stream;

/// The stream function's routes alone, for merging into the local server.
pub fn routes(state: StreamState) -> Router {
    Router::new()
        .route("/stream", post(stream))
        .route("/stream/{id}", get(native::resume::resume))
        .route("/stream/{id}/cancel", post(native::resume::cancel))
        .route("/v1/chat/completions", post(openai::chat))
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{model}", get(openai::one_model))
        .route("/v1/responses", post(responses::create))
        .route(
            "/v1/responses/{id}",
            get(responses::retrieve).delete(responses::delete),
        )
        .route("/v1/responses/{id}/cancel", post(responses::cancel))
        .route(
            "/v1/responses/{id}/input_items",
            get(responses::input_items),
        )
        .with_state(state)
}

/// The function's whole router: `/stream`, `/v1` and `/export` (which this function serves
/// because its responses stream: an export has no size limit) behind the key check, and
/// `/health`.
pub fn router(
    state: StreamState,
    export: Arc<dyn ConversationExport>,
    health: Arc<dyn HealthCheck>,
    auth: Auth,
) -> Router {
    let internal = internal_routes(state.clone());
    let api = routes(state).merge(export::routes(export));
    with_fallbacks(
        protect(api, auth)
            .merge(health_router(health))
            .merge(internal),
    )
}

/// The route a Lambda invocation of this function calls to generate a background response
/// (see [`responses::background`]): outside the key check, since its one-time token is its
/// authentication.
pub fn internal_routes(state: StreamState) -> Router {
    Router::new()
        .route(
            responses::background::RUN_PATH,
            post(responses::background::run_queued),
        )
        .with_state(state)
}
