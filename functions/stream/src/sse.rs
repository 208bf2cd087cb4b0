//! Writing server-sent events to the response channel; a gone client is noted, not fatal.

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;

/// The response side of a stream. After the client leaves, writes are dropped quietly.
pub struct Events {
    tx: mpsc::Sender<Bytes>,
    open: bool,
    pub bytes: usize,
    pub events: usize,
}

impl Events {
    pub fn new(tx: mpsc::Sender<Bytes>) -> Self {
        Self {
            tx,
            open: true,
            bytes: 0,
            events: 0,
        }
    }

    /// Whether the client is still reading.
    pub fn client_connected(&self) -> bool {
        self.open
    }

    /// Sends `event: name` with `data` as one line of JSON.
    pub async fn send<T: Serialize>(&mut self, name: &str, data: &T) {
        let json = serde_json::to_string(data).unwrap_or_else(|_| "{}".into());
        self.write(format!("event: {name}\ndata: {json}\n\n")).await;
    }

    /// Sends an SSE comment line (ignored by clients; keeps proxies from closing the stream).
    pub async fn comment(&mut self, text: &str) {
        self.write(format!(": {text}\n\n")).await;
    }

    async fn write(&mut self, frame: String) {
        if !self.open {
            return;
        }
        let len = frame.len();
        if self.tx.send(Bytes::from(frame)).await.is_err() {
            self.open = false;
            tracing::info!("client disconnected; generation goes on and will be saved");
        } else {
            self.bytes += len;
            self.events += 1;
        }
    }
}
