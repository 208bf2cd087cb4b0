//! Reading a `text/event-stream` response as a client does, with the time each event arrived.

use std::time::Instant;

use futures_util::StreamExt;
use serde_json::Value;

/// One event as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    /// `event:` name, or `:` for a comment.
    pub name: String,
    pub data: Value,
    /// The `id:` field, when the event has one.
    pub id: Option<String>,
}

/// Parses complete events out of `buf` (bytes, so a character split across network chunks is
/// never cut), leaving any partial event in it.
pub fn drain_events(buf: &mut Vec<u8>, at: Instant, out: &mut Vec<Received>) {
    while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
        let frame: Vec<u8> = buf.drain(..end + 2).collect();
        let frame = String::from_utf8_lossy(&frame);
        let mut name = String::from("message");
        let mut data = String::new();
        let mut id = None;
        for line in frame.lines() {
            if let Some(comment) = line.strip_prefix(':') {
                name = ":".into();
                data = comment.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            } else if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim().to_owned());
            }
        }
        let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
        out.push(Received { at, name, data, id });
    }
}

/// Reads the whole stream; `stop_after` ends reading (dropping the connection) after that many
/// `delta` events.
pub async fn read(resp: reqwest::Response, stop_after: Option<usize>) -> Vec<Received> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else { break };
        buf.extend_from_slice(&chunk);
        drain_events(&mut buf, Instant::now(), &mut out);
        if stop_after.is_some_and(|n| out.iter().filter(|e| e.name == "delta").count() >= n) {
            break;
        }
    }
    out
}

/// A stream read in part: the rest is still to come (dropping it drops the connection).
pub struct Rest {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: Vec<u8>,
}

/// Reads events until `deltas` `delta` events came (or the stream ended); returns them and
/// the rest of the stream.
pub async fn read_some(resp: reqwest::Response, deltas: usize) -> (Vec<Received>, Rest) {
    let mut rest = Rest {
        body: Box::pin(resp.bytes_stream()),
        buf: Vec::new(),
    };
    let mut out: Vec<Received> = Vec::new();
    while out.iter().filter(|e| e.name == "delta").count() < deltas {
        let Some(Ok(chunk)) = rest.body.next().await else {
            break;
        };
        rest.buf.extend_from_slice(&chunk);
        drain_events(&mut rest.buf, Instant::now(), &mut out);
    }
    (out, rest)
}

impl Rest {
    /// Reads the stream to its end.
    pub async fn finish(mut self) -> Vec<Received> {
        let mut out = Vec::new();
        drain_events(&mut self.buf, Instant::now(), &mut out);
        while let Some(Ok(chunk)) = self.body.next().await {
            self.buf.extend_from_slice(&chunk);
            drain_events(&mut self.buf, Instant::now(), &mut out);
        }
        out
    }
}

/// The concatenated `text` of the `delta` events.
pub fn text(events: &[Received]) -> String {
    events
        .iter()
        .filter(|e| e.name == "delta")
        .filter_map(|e| e.data["text"].as_str())
        .collect()
}

/// The `id` of the last `delta`: where a client re-attaches.
pub fn last_id(events: &[Received]) -> Option<String> {
    events
        .iter()
        .rev()
        .find(|e| e.name == "delta")
        .and_then(|e| e.id.clone())
}

/// The event names in order, comments left out.
pub fn names(events: &[Received]) -> Vec<&str> {
    events
        .iter()
        .filter(|e| e.name != ":")
        .map(|e| e.name.as_str())
        .collect()
}
