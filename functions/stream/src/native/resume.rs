//! `GET /stream/{id}`: re-attach to a turn from a position of its stored text, from any
//! process; `POST /stream/{id}/cancel`: stop one. In the process generating the turn both go
//! through its live log (no database); in any other process, through the database: the turn's
//! log, polled every `RESUME_POLL_MS`, and a cancel flag the generating process reads at its
//! next checkpoint.

use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::auth::Owner;
use common::error::ErrorBody;
use common::http::{ValidPath, ValidQuery};
use common::store::{CancelOutcome, LogRead, PIECE_CHARS};
use common::telemetry::RequestId;
use common::young::awaiting_row;
use common::{ApiError, Status};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

use super::sse;
use crate::engine::events::{Start, StreamEvent};
use crate::engine::turn::{Halt, Item, Lagging, Reader, View};
use crate::engine::{RequestParts, StreamState};

/// The query string of `GET /stream/{id}`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ResumeParams {
    /// The resume position: the `id` of the last `delta` received (`Last-Event-ID`, which
    /// browsers' EventSource sends by itself, wins when both are given). Default: the start.
    #[param(value_type = Option<u64>, minimum = 0)]
    pub after: Option<String>,
}

fn turn_id(raw: &str) -> Result<Uuid, ApiError> {
    common::api::parse_id(raw)
}

/// The largest position the store is asked for (its text positions are 32-bit).
const MAX_POSITION: usize = i32::MAX as usize - 1;

/// A value that was given: trimmed, not empty.
fn given(raw: Option<&str>) -> Option<&str> {
    raw.map(str::trim).filter(|r| !r.is_empty())
}

/// The resume position from `Last-Event-ID` or `?after=`: a whole number of characters.
fn position(headers: &HeaderMap, after: Option<&str>) -> Result<usize, ApiError> {
    let bad = || {
        ApiError::invalid(
            "the position (Last-Event-ID or after) must be the id of a delta: a whole number",
        )
    };
    let header = headers
        .get("last-event-id")
        .map(|v| v.to_str().map_err(|_| ()))
        .transpose()
        .map_err(|_| ApiError::invalid("Last-Event-ID must be a position a delta's id gave"))?;
    // Up to 19 digits (what the document's pattern says; empty is the start).
    let header = given(header)
        .map(|raw| {
            let digits = raw.len() <= 19 && raw.bytes().all(|b| b.is_ascii_digit());
            digits
                .then(|| raw.parse::<u64>().ok())
                .flatten()
                .ok_or_else(bad)
        })
        .transpose()?;
    // `after` is checked even when the header wins: an int64, as documented.
    let after = given(after)
        .map(|raw| {
            raw.parse::<i64>()
                .ok()
                .and_then(|p| u64::try_from(p).ok())
                .ok_or_else(bad)
        })
        .transpose()?;
    // No answer is longer than 2^31 characters: a position beyond that is beyond the end.
    let at = header.or(after).unwrap_or(0);
    Ok(usize::try_from(at).unwrap_or(usize::MAX).min(MAX_POSITION))
}

/// Re-attaches to one of the caller's turns: its `start`, the stored text after the position,
/// then the rest as it comes, then the same final event its stream sent.
#[utoipa::path(get, path = "/stream/{id}", tag = "stream",
    params(
        ("id" = Uuid, Path, description = "The turn's id"),
        ("last-event-id" = Option<String>, Header,
            description = "The `id` of the last `delta` received (what EventSource sends)"),
        ResumeParams,
    ),
    responses(
        (status = 200, description = "Server-sent events as `POST /stream` sends them: `start`, \
            the text after the position as `delta`s (each with its `id:`), then `done` or `error`",
            content_type = "text/event-stream", body = StreamEvent),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No turn of the caller has this id", body = ErrorBody),
        (status = 422, description = "A malformed id or position", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    ))]
pub async fn resume(
    State(state): State<StreamState>,
    Extension(owner): Extension<Owner>,
    request_id: Option<Extension<RequestId>>,
    ValidPath(raw): ValidPath<String>,
    ValidQuery(params): ValidQuery<ResumeParams>,
    request: Request,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let id = turn_id(&raw)?;
    let from = position(request.headers(), params.after.as_deref())?;
    let parts = RequestParts::of(&request);
    let line = |reader: &Arc<Reader>| RequestLine {
        request_id: request_id
            .as_ref()
            .map(|r| r.0.0.clone())
            .unwrap_or_default(),
        started,
        id,
        from,
        reader: reader.clone(),
    };
    let (events, reader) = follow_turn(&state, &owner.0, id, from, &parts).await?;
    let reader_line = line(&reader);
    let events = logged(events, reader_line);
    Ok(sse::response(id, sse::body_of(events, reader)))
}

/// The items of one of `owner`'s turns from character `from` of its stored text, as they come,
/// from any process: in the one generating it, its live log; anywhere else, the database (its
/// log polled every `RESUME_POLL_MS`). Starts with the turn's `start`, ends with its final
/// event. A 404 when `owner` has no such turn.
pub(crate) async fn follow_turn(
    state: &StreamState,
    owner: &str,
    id: Uuid,
    from: usize,
    parts: &RequestParts,
) -> Result<(Items, Arc<Reader>), ApiError> {
    let keepalive = state.limits.keepalive_interval;
    if let Some(turn) = state.turns.get(owner, id) {
        let reader = turn.reader(View::Stored, parts.conn.clone());
        let events = turn.attach(reader.clone(), from, keepalive);
        return Ok((Box::pin(events), reader));
    }
    let at = i64::try_from(from).unwrap_or(i64::MAX);
    let first = awaiting_row(id, || async {
        state.store.read_log(owner, id, at, PIECE_CHARS).await
    })
    .await?
    .ok_or(ApiError::NotFound("no turn with this id"))?;
    let poll = Poll {
        state: state.clone(),
        owner: owner.to_owned(),
        id,
        sent: from,
        first: Some(first),
        started: false,
        ended: false,
        quiet_since: tokio::time::Instant::now(),
        stop_by: parts
            .lambda_deadline
            .map(|d| lambda_stop(d, state.limits.resume_poll)),
    };
    Ok((Box::pin(poll.events()), Arc::new(Reader::default())))
}

/// A turn's items as a reader follows them.
pub(crate) type Items =
    std::pin::Pin<Box<dyn Stream<Item = Result<Item, Lagging>> + Send + 'static>>;

/// The log line of a re-attached reader's request, written when its response ends (the
/// response is an event stream, which the request log leaves to it).
struct RequestLine {
    request_id: String,
    started: std::time::Instant,
    id: Uuid,
    from: usize,
    reader: Arc<Reader>,
}

impl Drop for RequestLine {
    fn drop(&mut self) {
        tracing::info!(
            target: "request",
            request_id = %self.request_id,
            method = "GET",
            route = "/stream/{id}",
            status = 200u16,
            latency_ms = common::telemetry::millis(self.started.elapsed()),
            response_bytes = self.reader.sent.load(std::sync::atomic::Ordering::SeqCst),
            conversation_id = %self.id,
            resumed_from = self.from,
            client_connected = self.reader.connected(),
            "request"
        );
    }
}

/// `events`, writing `line` once they end or the client leaves.
fn logged<S>(events: S, line: RequestLine) -> impl Stream<Item = S::Item> + Send + 'static
where
    S: Stream + Send + 'static,
{
    use futures_util::StreamExt;
    events.map(move |item| {
        let _ = &line;
        item
    })
}

/// When a poll served in Lambda ends (a client re-attaches again): well before the deadline.
fn lambda_stop(deadline: std::time::SystemTime, poll: Duration) -> tokio::time::Instant {
    let left = deadline
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default()
        .saturating_sub(Duration::from_secs(2) + poll);
    tokio::time::Instant::now() + left
}

/// A re-attached reader in a process that does not generate the turn: it polls the turn's log.
struct Poll {
    state: StreamState,
    owner: String,
    id: Uuid,
    /// The position delivered so far.
    sent: usize,
    /// The first read, made before the response (a 404 is still possible then).
    first: Option<LogRead>,
    started: bool,
    ended: bool,
    /// Since when nothing was sent (a keep-alive comment after `KEEPALIVE_INTERVAL_MS`).
    quiet_since: tokio::time::Instant,
    /// In Lambda: when to end the response so that the client re-attaches in time.
    stop_by: Option<tokio::time::Instant>,
}

/// How long a poller tolerates the database being unavailable before it ends the response
/// (the client re-attaches from its last position).
const GIVE_UP_AFTER: Duration = Duration::from_secs(30);

impl Poll {
    fn events(self) -> impl Stream<Item = Result<Item, Lagging>> + Send + 'static {
        futures_util::stream::unfold(self, |mut p| async move {
            let item = p.next().await?;
            Some((Ok(item), p))
        })
    }

    async fn next(&mut self) -> Option<Item> {
        if self.ended {
            return None;
        }
        let interval = self.state.limits.resume_poll;
        let keepalive = self.state.limits.keepalive_interval;
        let mut failing_since: Option<tokio::time::Instant> = None;
        loop {
            let read = match self.first.take() {
                Some(read) => read,
                None => {
                    if self
                        .stop_by
                        .is_some_and(|s| tokio::time::Instant::now() >= s)
                    {
                        return None;
                    }
                    let from = i64::try_from(self.sent).unwrap_or(i64::MAX);
                    match self
                        .state
                        .store
                        .read_log(&self.owner, self.id, from, PIECE_CHARS)
                        .await
                    {
                        Ok(Some(read)) => read,
                        // The turn is gone (its thread was deleted).
                        Ok(None) => return None,
                        Err(e) => {
                            let since =
                                *failing_since.get_or_insert_with(tokio::time::Instant::now);
                            tracing::warn!(id = %self.id, error = %common::error::error_chain(&e),
                                "re-attached reader: reading the turn's log failed");
                            if since.elapsed() > GIVE_UP_AFTER {
                                return None;
                            }
                            tokio::time::sleep(interval).await;
                            continue;
                        }
                    }
                }
            };
            failing_since = None;
            if !self.started {
                self.started = true;
                self.first = Some(read.clone());
                return Some(Item::Start(Start {
                    id: self.id,
                    created_at: read
                        .turn
                        .created_at
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default(),
                }));
            }
            if !read.text.is_empty() {
                self.sent += read.text.chars().count();
                self.quiet_since = tokio::time::Instant::now();
                return Some(Item::Delta {
                    text: read.text,
                    pos: self.sent,
                });
            }
            let total = usize::try_from(read.total).unwrap_or(0);
            if read.turn.status != Status::Streaming && self.sent >= total {
                self.ended = true;
                return Some(Item::Final(StreamEvent::last_of(&read.turn, true)));
            }
            if self.quiet_since.elapsed() >= keepalive {
                self.quiet_since = tokio::time::Instant::now();
                return Some(Item::KeepAlive);
            }
            tokio::time::sleep(interval).await;
        }
    }
}

/// The body of `POST /stream/{id}/cancel`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Cancelled {
    /// The turn's id.
    pub id: Uuid,
    /// `cancelled` when the turn has stopped (in the process that generated it; or the status
    /// it ended with, when it ended first); `cancelling` when another process will stop it
    /// within `CHECKPOINT_INTERVAL_MS`.
    pub status: String,
}

/// How long a cancel in the generating process waits for the turn to be saved.
const CANCEL_WAIT: Duration = Duration::from_secs(5);

/// Stops one of the caller's running turns: the provider request is dropped (no more tokens
/// are paid for) and the turn is saved `cancelled` with its text so far; its stream ends with
/// an `error` event of code `cancelled`.
#[utoipa::path(post, path = "/stream/{id}/cancel", tag = "stream",
    params(("id" = Uuid, Path, description = "The turn's id")),
    responses(
        (status = 202, description = "The turn stops", body = Cancelled),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No turn of the caller has this id", body = ErrorBody),
        (status = 409, description = "The turn has already ended (`already_finished`)",
            body = ErrorBody),
        (status = 422, description = "The id is not a UUID", body = ErrorBody),
        (status = 503, description = "The database is unavailable", body = ErrorBody),
    ))]
pub async fn cancel(
    State(state): State<StreamState>,
    Extension(owner): Extension<Owner>,
    ValidPath(raw): ValidPath<String>,
) -> Result<Response, ApiError> {
    let id = turn_id(&raw)?;
    if let Some(turn) = state.turns.get(&owner.0, id) {
        turn.halt(Halt::Cancel);
        let status = if state.turns.wait_ended(id, CANCEL_WAIT).await {
            turn.final_status()
                .map_or("cancelled", Status::as_str)
                .to_owned()
        } else {
            "cancelling".to_owned()
        };
        return Ok(accepted(id, status));
    }
    let outcome = awaiting_row(id, || async {
        Ok::<_, common::error::StoreError>(match state.store.request_cancel(&owner.0, id).await? {
            CancelOutcome::NotFound => None,
            found => Some(found),
        })
    })
    .await?;
    match outcome.unwrap_or(CancelOutcome::NotFound) {
        CancelOutcome::Requested => Ok(accepted(id, "cancelling".to_owned())),
        CancelOutcome::NotFound => Err(ApiError::NotFound("no turn with this id")),
        CancelOutcome::Finished(status) => Err(ApiError::Conflict {
            code: "already_finished",
            message: format!("the turn has already ended ({})", status.as_str()),
        }),
    }
}

fn accepted(id: Uuid, status: String) -> Response {
    (StatusCode::ACCEPTED, Json(Cancelled { id, status })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_come_from_last_event_id_or_after() {
        let mut headers = HeaderMap::new();
        assert_eq!(position(&headers, None).unwrap(), 0);
        assert_eq!(position(&headers, Some("42")).unwrap(), 42);
        headers.insert("last-event-id", "7".parse().unwrap());
        assert_eq!(position(&headers, Some("42")).unwrap(), 7);
        assert_eq!(position(&headers, Some("7030106544")).unwrap(), 7);
        assert_eq!(
            position(&HeaderMap::new(), Some("7030106544")).unwrap(),
            MAX_POSITION
        );
        assert!(position(&headers, Some("9223372036854775808")).is_err());
        for (value, ok) in [
            ("", true),
            ("9999999999999999999", true),
            ("+5", false),
            ("10000000000000000000", false),
        ] {
            headers.insert("last-event-id", value.parse().unwrap());
            assert_eq!(position(&headers, None).is_ok(), ok, "{value:?}");
        }
        for bad in [
            "-1",
            "x",
            "1.5",
            "99999999999999999999999",
            "9223372036854775808",
        ] {
            assert!(position(&HeaderMap::new(), Some(bad)).is_err(), "{bad}");
        }
    }
}
