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
    Ok(App::new(settings, store)?.router)
}

/// The local server: its router, and the stream state (whose running turns a shutdown drains).
pub struct App {
    pub router: Router,
    pub stream: StreamState,
}

impl App {
    pub fn new(settings: &Settings, store: Arc<dyn Backend>) -> anyhow::Result<Self> {
        let stream =
            StreamState::from_settings(settings, store.clone()).map_err(|e| anyhow::anyhow!(e))?;
        Ok(Self {
            router: router(settings, store, stream.clone()),
            stream,
        })
    }
}

fn router(settings: &Settings, store: Arc<dyn Backend>, stream_state: StreamState) -> Router {
    let auth = Auth::from_settings(&settings.auth, store.clone());
    let api = Router::new()
        .merge(history::routes(store.clone()))
        .merge(history::delete_routes(store.clone()))
        .merge(history::threads::routes(store.clone()))
        .merge(history::usage::routes(store.clone()))
        .merge(get::routes(store.clone()))
        .merge(stream::routes(stream_state))
        .merge(stream::export::routes(store.clone()))
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
    with_fallbacks(
        protect(api, auth)
            .merge(health_router(common::health(store, settings)))
            .merge(docs)
            .merge(history::playground::routes(
                settings.playground.stream_url.as_deref(),
            )),
    )
}
