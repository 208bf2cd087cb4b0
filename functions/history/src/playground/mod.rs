//! The playground: one page at `GET /` with its script and style sheet, embedded in the binary
//! and served without a key (the page asks for one when the API needs it). Served by the local
//! server, and in AWS by the history function behind the HTTP API, the page's own origin for
//! its reads; its streams go to `PLAYGROUND_STREAM_URL` (the stream function's URL) when set.
//! The Content-Security-Policy lets the page load only its own files and talk only to its own
//! origin and that stream URL.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const PAGE: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const MARKDOWN: &str = include_str!("markdown.js");
const USAGE: &str = include_str!("usage.js");
const STYLE: &str = include_str!("app.css");

/// What the routes serve: the page with its stream URL filled in, and the policy.
#[derive(Clone)]
pub struct Playground {
    page: Bytes,
    csp: HeaderValue,
}

/// `GET /` and `GET /playground/{file}`; `stream_url` as in
/// [`common::settings::PlaygroundSettings`].
pub fn routes(stream_url: Option<&str>) -> Router {
    let page = PAGE.replace("{{STREAM_URL}}", &attribute(stream_url.unwrap_or_default()));
    // The URL was checked by the settings: no character a header value refuses.
    let csp = HeaderValue::from_str(&policy(stream_url))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"));
    Router::new()
        .route("/", get(page_handler))
        .route("/playground/{file}", get(file))
        .with_state(Playground {
            page: Bytes::from(page),
            csp,
        })
}

/// The playground page.
#[utoipa::path(get, path = "/", tag = "playground", security(()), responses(
    (status = 200, description = "The playground page (HTML). No key needed: the page asks \
        for one when the API answers 401.", content_type = "text/html", body = String),
))]
pub async fn page_handler(State(p): State<Playground>) -> Response {
    asset(p.page, "text/html; charset=utf-8", p.csp)
}

/// The page's modules (`app.js`, `markdown.js`, `usage.js`) and style sheet (`app.css`).
#[utoipa::path(get, path = "/playground/{file}", tag = "playground", security(()),
    params(("file" = String, Path, description = "`app.js`, `markdown.js`, `usage.js` or `app.css`")),
    responses(
        (status = 200, description = "The file (JavaScript or CSS)", content(
            (String = "text/javascript"),
            (String = "text/css"),
        )),
        (status = 404, description = "No such file", body = common::error::ErrorBody),
        (status = 422, description = "A file name that does not decode (invalid UTF-8)",
            body = common::error::ErrorBody),
    ))]
pub async fn file(
    State(p): State<Playground>,
    common::http::ValidPath(name): common::http::ValidPath<String>,
) -> Response {
    match name.as_str() {
        "app.js" => asset(
            Bytes::from_static(SCRIPT.as_bytes()),
            "text/javascript; charset=utf-8",
            p.csp,
        ),
        "markdown.js" => asset(
            Bytes::from_static(MARKDOWN.as_bytes()),
            "text/javascript; charset=utf-8",
            p.csp,
        ),
        "usage.js" => asset(
            Bytes::from_static(USAGE.as_bytes()),
            "text/javascript; charset=utf-8",
            p.csp,
        ),
        "app.css" => asset(
            Bytes::from_static(STYLE.as_bytes()),
            "text/css; charset=utf-8",
            p.csp,
        ),
        _ => common::ApiError::NotFound("no such playground file").into_response(),
    }
}

fn asset(body: Bytes, content_type: &'static str, csp: HeaderValue) -> Response {
    let mut resp = body.into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, "no-cache"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    resp
}

/// Only the page's own files; requests only to its origin and the stream URL's; no frames,
/// forms to elsewhere, or base URL changes.
fn policy(stream_url: Option<&str>) -> String {
    let stream_origin = stream_url.map(origin).unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'{}{stream_origin}; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'",
        if stream_origin.is_empty() { "" } else { " " },
    )
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("https", url));
    let host = rest.split('/').next().unwrap_or_default();
    format!("{scheme}://{host}")
}

/// Escapes text for a double-quoted HTML attribute.
fn attribute(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_adds_only_the_stream_origin() {
        assert!(policy(None).contains("connect-src 'self';"));
        assert!(
            policy(Some("https://abc.lambda-url.eu-west-1.on.aws/x"))
                .contains("connect-src 'self' https://abc.lambda-url.eu-west-1.on.aws;")
        );
    }

    #[test]
    fn the_page_names_what_the_contract_fixes() {
        for name in [
            r#"<label for="prompt" class="visually-hidden">Prompt</label>"#,
            r#"<button id="send" type="submit">Send</button>"#,
            r#"<button id="stop" type="button" disabled>Stop</button>"#,
            r#"<button id="new-thread" type="button">New thread</button>"#,
            r#"<input id="search" type="search""#,
            r#"<ul id="threads" aria-label="Threads">"#,
            r#"<section id="answer-box" aria-label="Answer">"#,
            r#"<label for="key">API key</label>"#,
            r#"<label for="instructions" class="small-label">Instructions</label>"#,
            r#"<button id="regenerate" type="button" disabled>Regenerate</button>"#,
            r#"<label for="model" class="small-label">Model</label>"#,
        ] {
            assert!(PAGE.contains(name), "{name}");
        }
        for script in [SCRIPT, MARKDOWN] {
            assert!(!script.contains("innerHTML"), "data must never become HTML");
            assert!(
                !script.contains("insertAdjacentHTML"),
                "data must never become HTML"
            );
        }
    }
}
