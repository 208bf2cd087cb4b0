//! Writing server-sent events to the response channel; a gone client is noted, not fatal.

use bytes::Bytes;

use crate::events::StreamEvent;
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

    /// Sends one event: `event: <name>` and its data as one line of JSON.
    pub async fn send(&mut self, event: &StreamEvent) {
        let frame = format!("event: {}\ndata: {}\n\n", event.name(), event.data());
        self.write(frame).await;
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
