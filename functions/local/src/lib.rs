//! Every function's routes on one router: the local server and containers run this.

pub mod openapi;

use std::sync::Arc;

use axum::Router;
use common::Settings;
use common::auth::Auth;
use common::http::{health_router, protect, with_fallbacks};
use common::store::Backend;
use stream::StreamState;

/// The merged router over one store and the configured provider.
pub fn app(settings: &Settings, store: Arc<dyn Backend>) -> anyhow::Result<Router> {
    let stream_state =
        StreamState::from_settings(settings, store.clone()).map_err(|e| anyhow::anyhow!(e))?;
    let auth = Auth::from_settings(&settings.auth, store.clone());
    let api = Router::new()
        .merge(history::routes(store.clone()))
        .merge(get::routes(store.clone()))
        .merge(stream::routes(stream_state))
        .merge(search::routes(store.clone(), settings.db.search_candidates));
    let docs = Router::new().route(
        "/openapi.json",
        axum::routing::get(|| async {
            // Generated once per process, on the first request.
            static DOCUMENT: std::sync::LazyLock<String> =
                std::sync::LazyLock::new(openapi::document);
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                DOCUMENT.as_str(),
            )
        }),
    );
    Ok(with_fallbacks(
        protect(api, auth).merge(health_router(store)).merge(docs),
    ))
}
