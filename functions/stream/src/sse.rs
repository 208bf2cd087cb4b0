//! The `/stream` wire format: a live turn's events as server-sent events. Each `delta` carries
//! an SSE `id:` (the resume position after it); comments (`: keep-alive`) fill silences.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt;

use crate::events::{Delta, StreamEvent};
use crate::turn::{Item, LiveEvent, LiveTurn, Reader, View};

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
    let events = turn.follow(reader, 0, keepalive).filter_map(move |item| {
        let out = match item {
            Err(lagging) => Some(Err(lagging)),
            Ok(item) => encode(&item, view).map(|(text_bytes, frame)| {
                counted.took(text_bytes, frame.len());
                Ok(Bytes::from(frame))
            }),
        };
        std::future::ready(out)
    });
    Body::from_stream(events)
}

/// The frame of one item and the bytes of answer text in it; `None` for a delta with nothing
/// for this view.
fn encode(item: &Item, view: View) -> Option<(usize, String)> {
    let event = match item {
        Item::KeepAlive => return Some((0, ": keep-alive\n\n".to_owned())),
        Item::Event(event) => event,
    };
    match &**event {
        LiveEvent::Start(start) => Some((0, frame(&StreamEvent::Start(start.clone()), None))),
        LiveEvent::Delta { raw, stored, pos } => {
            let text = match (view, stored) {
                (View::Stored, Some(stored)) => stored,
                _ => raw,
            };
            if text.is_empty() {
                return None;
            }
            let delta = StreamEvent::Delta(Delta { text: text.clone() });
            Some((text.len(), frame(&delta, Some(*pos))))
        }
        LiveEvent::Final(event) => Some((0, frame(event, None))),
    }
}
