//! The `/stream` wire format: a live turn's events as server-sent events. Each `delta` carries
//! an SSE `id:` (the resume position after it); comments (`: keep-alive`) fill silences.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt;

use crate::events::{Delta, StreamEvent};
use crate::turn::{Item, LiveTurn, Reader, View};

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
    let counted = reader.clone();
    let events = turn.follow(reader, view, 0, keepalive).map(move |item| {
        item.map(|item| {
            let (text_bytes, frame) = encode(item);
            counted.took(text_bytes, frame.len());
            Bytes::from(frame)
        })
    });
    Body::from_stream(events)
}

/// The frame of one item and the bytes of answer text in it.
fn encode(item: Item) -> (usize, String) {
    match item {
        Item::KeepAlive => (0, ": keep-alive\n\n".to_owned()),
        Item::Delta { text, pos } => {
            let len = text.len();
            (len, frame(&StreamEvent::Delta(Delta { text }), Some(pos)))
        }
        Item::Start(start) => (0, frame(&StreamEvent::Start(start), None)),
        Item::Final(last) => (0, frame(&last, None)),
    }
}
