//! `GET /export`: the caller's turns as JSON Lines, oldest first, streamed page by page so that
//! no size limit applies (on the stream function, whose Lambda streams its responses: a
//! buffered function would cut the body at 6 MB).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use common::auth::Owner;
use common::error::ErrorBody;
use common::http::ValidQuery;
use common::store::{ConversationExport, Cursor, ExportQuery};
use common::{ApiError, Conversation};
use serde::Deserialize;

/// Turns read per statement.
const PAGE_TURNS: i64 = 100;

/// The `/export` route alone.
pub fn routes(store: Arc<dyn ConversationExport>) -> Router {
    Router::new()
        .route("/export", get(export))
        .with_state(store)
}

/// The query string of `GET /export`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// Only turns created at or after this time: an RFC 3339 time or a date (midnight UTC),
    /// years 1 to 9999; empty is no bound. (The pattern leaves out February 29, which is taken
    /// in a leap year.)
    #[param(value_type = Option<String>, pattern = r"^[ \t\n\x0B\f\r]*$|^[ \t\n\x0B\f\r]*(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})-((0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31)([Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))?[ \t\n\x0B\f\r]*$")]
    pub from: Option<String>,
    /// Only turns created before this time, in the same forms.
    #[param(value_type = Option<String>, pattern = r"^[ \t\n\x0B\f\r]*$|^[ \t\n\x0B\f\r]*(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})-((0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31)([Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))?[ \t\n\x0B\f\r]*$")]
    pub to: Option<String>,
}

/// Every turn of the caller's, one JSON object a line (every field `GET /history/{id}` has,
/// never cut), oldest first. The first page is read before the answer starts, so an
/// unavailable database is a 503; a failure after that ends the body early, without its last
/// line break (never a silently shorter file that looks whole).
#[utoipa::path(get, path = "/export", tag = "history", params(ExportParams), responses(
    (status = 200, description = "The caller's turns as JSON Lines (`application/x-ndjson`), \
        oldest first, each a `Conversation`; streamed, of any size", body = Conversation,
        content_type = "application/x-ndjson"),
    (status = 401, description = "Missing or invalid API key", body = ErrorBody),
    (status = 422, description = "A bad from or to", body = ErrorBody),
    (status = 503, description = "The database is unavailable", body = ErrorBody),
))]
pub async fn export(
    State(store): State<Arc<dyn ConversationExport>>,
    Extension(owner): Extension<Owner>,
    ValidQuery(params): ValidQuery<ExportParams>,
) -> Result<Response, ApiError> {
    let query = ExportQuery {
        from: common::api::parse_time("from", params.from.as_deref())?,
        to: common::api::parse_time("to", params.to.as_deref())?,
        after: None,
        limit: PAGE_TURNS,
    };
    let first = store.export_page(&owner.0, &query).await?;
    let pages = futures_util::stream::unfold(Step::Send(first, query), move |step| {
        let store = store.clone();
        let owner = owner.0.clone();
        async move {
            match step {
                Step::End => None,
                Step::Fail => Some((Err(std::io::Error::other("export interrupted")), Step::End)),
                Step::Send(page, mut query) => {
                    let last = page.last()?;
                    query.after = Some(Cursor::after(last));
                    let body = lines(&page);
                    let next = if i64::try_from(page.len()).unwrap_or(i64::MAX) < query.limit {
                        Step::End
                    } else {
                        match store.export_page(&owner, &query).await {
                            Ok(next) => Step::Send(next, query),
                            Err(e) => {
                                tracing::error!(error = %common::error::error_chain(&e),
                                    "export stopped: the next page could not be read");
                                Step::Fail
                            }
                        }
                    };
                    Some((Ok(body), next))
                }
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(pages),
    )
        .into_response())
}

/// Where the export's body is.
enum Step {
    /// This page goes next; `query` read it.
    Send(Vec<Conversation>, ExportQuery),
    /// Reading the next page failed: the body ends in an error.
    Fail,
    End,
}

/// A page as JSON Lines.
fn lines(page: &[Conversation]) -> Bytes {
    let mut out = Vec::with_capacity(page.len() * 512);
    for c in page {
        if serde_json::to_writer(&mut out, c).is_ok() {
            out.push(b'\n');
        }
    }
    Bytes::from(out)
}
