//! The `/stream` wire format: a turn's events as server-sent events. Each `delta` carries an
//! SSE `id:` (the resume position after it); comments (`: keep-alive`) fill silences.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::engine::events::{Delta, StreamEvent};
use crate::engine::turn::{Item, Lagging, LiveTurn, Reader, View};

/// One SSE frame: `event:`, an optional `id:`, and the data as one line of JSON.
pub fn frame(event: &StreamEvent, id: Option<usize>) -> String {
    match id {
        Some(id) => format!(
            "event: {}\nid: {id}\ndata: {}\n\n",
            event.name(),
            event.data()
        ),
        None => format!("event: {}\ndata: {}\n\n", event.name(), event.data()),
    }
}

/// The response body of a reader following `turn` from its first event: the raw text for the
/// client that asked, the stored text for one that re-attached (`View::Stored`).
pub fn body(turn: &Arc<LiveTurn>, reader: Arc<Reader>, view: View, keepalive: Duration) -> Body {
    body_of(turn.follow(reader.clone(), view, 0, keepalive), reader)
}

/// The response body of any stream of items, counted on `reader`.
pub fn body_of(
    items: impl Stream<Item = Result<Item, Lagging>> + Send + 'static,
    reader: Arc<Reader>,
) -> Body {
    let events = items.map(move |item| {
        item.map(|item| {
            let (text_bytes, frame) = encode(item);
            reader.took(text_bytes, frame.len());
            Bytes::from(frame)
        })
    });
    Body::from_stream(events)
}

/// A `text/event-stream` response (no caching, no proxy buffering) naming the turn.
pub fn response(id: uuid::Uuid, body: Body) -> Response {
    let mut response = event_stream(body);
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert("x-conversation-id", v);
    }
    response
}

/// A `text/event-stream` response: no caching, no proxy buffering; the stream logs its own line.
pub fn event_stream(body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
        .extensions_mut()
        .insert(common::telemetry::LogsItself);
    response
}

/// The frame of one item and the bytes of answer text in it.
fn encode(item: Item) -> (usize, String) {
    match item {
        Item::KeepAlive => (0, ": keep-alive\n\n".to_owned()),
        // `/stream` offers no tools; a `/v1` turn re-attached here shows its text.
        Item::Tool(_) | Item::Logprobs(_) => (0, String::new()),
        Item::Delta { text, pos } => {
            let len = text.len();
            (len, frame(&StreamEvent::Delta(Delta { text }), Some(pos)))
        }
        Item::Start(start) => (0, frame(&StreamEvent::Start(start), None)),
        Item::Final(last) => (0, frame(&last, None)),
    }
}
