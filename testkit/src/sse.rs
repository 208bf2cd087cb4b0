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
}

/// Parses complete events out of `buf`, leaving any partial event in it.
pub fn drain_events(buf: &mut String, at: Instant, out: &mut Vec<Received>) {
    while let Some(end) = buf.find("\n\n") {
        let frame: String = buf.drain(..end + 2).collect();
        let mut name = String::from("message");
        let mut data = String::new();
        for line in frame.lines() {
            if let Some(comment) = line.strip_prefix(':') {
                name = ":".into();
                data = comment.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("event:") {
                name = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
        out.push(Received { at, name, data });
    }
}

/// Reads the whole stream; `stop_after` ends reading (dropping the connection) after that many
/// `delta` events.
pub async fn read(resp: reqwest::Response, stop_after: Option<usize>) -> Vec<Received> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else { break };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        drain_events(&mut buf, Instant::now(), &mut out);
        if stop_after.is_some_and(|n| out.iter().filter(|e| e.name == "delta").count() >= n) {
            break;
        }
    }
    out
}

/// The concatenated `text` of the `delta` events.
pub fn text(events: &[Received]) -> String {
    events
        .iter()
        .filter(|e| e.name == "delta")
        .filter_map(|e| e.data["text"].as_str())
        .collect()
}

/// The event names in order, comments left out.
pub fn names(events: &[Received]) -> Vec<&str> {
    events
        .iter()
        .filter(|e| e.name != ":")
        .map(|e| e.name.as_str())
        .collect()
}
