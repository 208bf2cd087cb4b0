//! The OpenAPI document of the whole service, generated from the handlers' annotations and the
//! types they read and write. Served at `GET /openapi.json`; committed as `openapi.json`
//! (`make openapi` rewrites it; a test fails when the two differ).

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "llm-stream",
        description = "Streams LLM answers as server-sent events and keeps every conversation \
            in PostgreSQL. Every error body is `{\"error\": {\"code\", \"message\"}}`; unknown \
            paths answer 404 and unknown methods 405 with that body. With `AUTH=required` every \
            path but `/health`, `/openapi.json` and the playground (`/`, `/playground/...`) \
            needs `Authorization: Bearer <key>`.",
        license(name = "MIT")
    ),
    paths(
        stream::post_stream::stream,
        stream::resume::resume,
        stream::resume::cancel,
        stream::openai::chat,
        stream::openai::models,
        stream::openai::one_model,
        history::history,
        history::threads::list,
        history::threads::one,
        history::threads::delete,
        get::get_one,
        search::search,
        common::http::health,
        history::playground::page_handler,
        history::playground::file,
    ),
    modifiers(&BearerKey),
    security(("bearer" = [])),
    tags(
        (name = "stream", description = "Answers as server-sent events"),
        (name = "history", description = "Saved conversations"),
        (name = "threads", description = "Conversations that go on: threads of turns"),
        (name = "search", description = "Full-text search"),
        (name = "health", description = "Liveness and database reachability"),
        (name = "playground", description = "The page where a person uses the service"),
        (name = "openai", description = "OpenAI-compatible Chat Completions: any OpenAI SDK works \
            against it; errors take OpenAI's shape"),
    )
)]
pub struct ApiDoc;

/// The `bearer` security scheme: an API key made by `local key create`.
struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key (`lsk_...`) from `make key OWNER=...`"))
                    .build(),
            ),
        );
    }
}

/// The document as the committed `openapi.json` holds it: pretty JSON and a final newline.
pub fn document() -> String {
    let mut json = ApiDoc::openapi().to_pretty_json().unwrap_or_default();
    json.push('\n');
    json
}
