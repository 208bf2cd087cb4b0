//! Live turns: the answers this process is generating. Each is a log of events (start, deltas,
//! the final event) that the generation appends to and never waits on; any number of readers
//! (the client that asked, clients that re-attach) follow it at their own pace. A reader that
//! falls too far behind is dropped and its connection closed; the answer goes on and is saved.
//! The registry of live turns is what cancel and shutdown reach, and what a re-attaching client
//! in the same process follows without touching the database.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::http::ConnHandle;
use futures_util::{Stream, StreamExt};
use tokio::sync::watch;
use uuid::Uuid;

use common::provider::Upstream;
use common::provider::tools::CallFragment;

use crate::engine::events::{Start, StreamEvent};

/// Why a generation was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    /// A client asked (`POST /stream/{id}/cancel`): the turn ends `cancelled`.
    Cancel,
    /// The process is shutting down and the grace period is over.
    Shutdown,
    /// The Lambda invocation's deadline is near: what is left is kept for saving.
    Deadline,
    /// The turn's thread was deleted (`DELETE /threads/{id}`, from any process): nothing of it
    /// is kept.
    ThreadDeleted,
}

impl Halt {
    /// The error code stored on the turn and sent in its `error` event.
    pub fn code(self) -> &'static str {
        match self {
            Halt::Cancel => "cancelled",
            Halt::Shutdown => "shutdown",
            Halt::Deadline => "deadline",
            Halt::ThreadDeleted => "thread_deleted",
        }
    }
}

/// One event of a live turn.
#[derive(Debug)]
pub enum LiveEvent {
    Start(Start),
    /// A piece of the answer: `stored` the bytes it added to the turn's stored text (redacted,
    /// held back, maybe empty), `raw` the piece as the provider sent it (what the asking client
    /// sees) when that differs (`None`: the same as the stored piece), and `pos` the stored
    /// text's length in characters after it (the resume position). The text is kept once.
    Delta {
        stored: std::ops::Range<usize>,
        raw: Option<String>,
        pos: usize,
    },
    /// A fragment of a tool call, in OpenAI's streamed shape (only the asking `/v1` client
    /// reads these; the stored record keeps the whole calls).
    Tool(CallFragment),
    /// The log probabilities of the text before it (only the asking `/v1` client reads these).
    Logprobs(Vec<serde_json::Value>),
    /// `done` or `error`: the record is saved (or logged) by then.
    Final(StreamEvent),
}

/// What a reader reads: the text as generated, or the stored text (a re-attached reader).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Raw,
    Stored,
}

/// One reader's progress, seen by the generation (to drop it when it lags) and by the report.
#[derive(Default)]
pub struct Reader {
    /// Bytes of text taken so far.
    taken: AtomicU64,
    /// Bytes written to the response so far (events included).
    pub sent: AtomicU64,
    lagging: AtomicBool,
    gone: AtomicBool,
    conn: Option<ConnHandle>,
    view: Option<View>,
}

impl Reader {
    /// Still reading: neither gone nor dropped for lagging.
    pub fn connected(&self) -> bool {
        !self.gone.load(Ordering::SeqCst) && !self.lagging.load(Ordering::SeqCst)
    }

    pub fn lagging(&self) -> bool {
        self.lagging.load(Ordering::SeqCst)
    }
}

struct Log {
    events: Vec<Arc<LiveEvent>>,
    /// Bytes of text appended so far: as generated, and as stored.
    raw_bytes: u64,
    stored_bytes: u64,
    /// The stored text so far, and its length in characters.
    stored: String,
    stored_chars: usize,
    readers: Vec<Arc<Reader>>,
    /// What the provider said when it refused the request, for a `/v1` client.
    refusal: Option<Upstream>,
}

/// A turn being generated in this process.
pub struct LiveTurn {
    pub id: Uuid,
    pub owner: String,
    log: Mutex<Log>,
    /// Bumped on every append; readers wait on it.
    version: watch::Sender<u64>,
    /// The provider accepted the request (its answer's first byte came). Apart from `version`:
    /// only a `/v1` response waits on it, and readers are not woken for it.
    accepted: watch::Sender<bool>,
    halt: watch::Sender<Option<Halt>>,
    lag_limit: u64,
}

impl LiveTurn {
    fn new(id: Uuid, owner: String, start: Start, lag_limit: usize) -> Self {
        Self {
            id,
            owner,
            log: Mutex::new(Log {
                events: vec![Arc::new(LiveEvent::Start(start))],
                raw_bytes: 0,
                stored_bytes: 0,
                stored: String::new(),
                stored_chars: 0,
                readers: Vec::new(),
                refusal: None,
            }),
            version: watch::channel(0).0,
            accepted: watch::channel(false).0,
            halt: watch::channel(None).0,
            lag_limit: lag_limit as u64,
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a delta. Never waits: readers that fell more than the lag limit behind are
    /// dropped here (their connection closed).
    pub fn push_delta(&self, raw: String, stored: &str, pos: usize) {
        let mut log = self.log();
        log.raw_bytes += raw.len() as u64;
        log.stored_bytes += stored.len() as u64;
        let start = log.stored.len();
        log.stored.push_str(stored);
        log.stored_chars = pos;
        let range = start..log.stored.len();
        let raw = (raw != stored).then_some(raw);
        log.events.push(Arc::new(LiveEvent::Delta {
            stored: range,
            raw,
            pos,
        }));
        let (raw_bytes, stored_bytes) = (log.raw_bytes, log.stored_bytes);
        for reader in &log.readers {
            let produced = match reader.view {
                Some(View::Stored) => stored_bytes,
                _ => raw_bytes,
            };
            let behind = produced.saturating_sub(reader.taken.load(Ordering::SeqCst));
            if behind > self.lag_limit && !reader.lagging.swap(true, Ordering::SeqCst) {
                tracing::warn!(id = %self.id, event = "client_lagging", behind_bytes = behind,
                    "a client fell too far behind its stream and was dropped; the answer goes on");
                if let Some(conn) = &reader.conn {
                    conn.close();
                }
            }
        }
        drop(log);
        self.version.send_modify(|v| *v += 1);
    }

    /// Appends a fragment of a tool call.
    pub fn push_tool(&self, fragment: CallFragment) {
        self.log().events.push(Arc::new(LiveEvent::Tool(fragment)));
        self.version.send_modify(|v| *v += 1);
    }

    /// Appends the log probabilities of the text just appended.
    pub fn push_logprobs(&self, items: Vec<serde_json::Value>) {
        self.log().events.push(Arc::new(LiveEvent::Logprobs(items)));
        self.version.send_modify(|v| *v += 1);
    }

    /// The provider has accepted the request (see [`LiveTurn::answered`]).
    pub fn mark_answered(&self) {
        self.accepted.send_replace(true);
    }

    /// The final event, when the turn ended in failure.
    pub fn final_failure(&self) -> Option<crate::engine::events::Failure> {
        match self.log().events.last().map(|e| &**e) {
            Some(LiveEvent::Final(StreamEvent::Error(f))) => Some(f.clone()),
            _ => None,
        }
    }

    /// Whether the provider has accepted the request.
    pub fn is_answered(&self) -> bool {
        *self.accepted.borrow()
    }

    /// The provider refused the request, saying this.
    pub fn set_refusal(&self, refusal: Upstream) {
        self.log().refusal = Some(refusal);
    }

    /// What the provider said when it refused the request.
    pub fn refusal(&self) -> Option<Upstream> {
        self.log().refusal.clone()
    }

    /// Resolves once the provider has accepted the request or the turn has ended: a `/v1`
    /// response holds its status until then, so that a refusal keeps its own.
    pub async fn answered(&self) {
        let mut accepted = self.accepted.subscribe();
        let mut version = self.version.subscribe();
        let ended = |_: &u64| {
            matches!(
                self.log().events.last().map(|e| &**e),
                Some(LiveEvent::Final(_))
            )
        };
        tokio::select! {
            _ = accepted.wait_for(|a| *a) => {}
            _ = version.wait_for(ended) => {}
        }
    }

    /// Resolves once anything has been appended: the first delta, or the final event.
    pub async fn first_append(&self) {
        let mut version = self.version.subscribe();
        let _ = version.wait_for(|v| *v > 0).await;
    }

    /// Appends the final event; readers end after it.
    pub fn push_final(&self, event: StreamEvent) {
        self.log().events.push(Arc::new(LiveEvent::Final(event)));
        self.version.send_modify(|v| *v += 1);
    }

    /// The whole stored text so far.
    pub fn stored_text(&self) -> String {
        self.log().stored.clone()
    }

    /// The stored text from character `from` on, and the stored length now.
    pub fn stored_since(&self, from: usize) -> (String, usize) {
        let log = self.log();
        let total = log.stored.chars().count();
        let rest = log.stored.chars().skip(from).collect();
        (rest, total)
    }

    /// The status the turn ended with, once its final event is out.
    pub fn final_status(&self) -> Option<common::Status> {
        let log = self.log();
        match log.events.last().map(|e| &**e) {
            Some(LiveEvent::Final(StreamEvent::Done(d))) => Some(d.status),
            Some(LiveEvent::Final(StreamEvent::Error(f))) => Some(f.status),
            _ => None,
        }
    }

    /// A reader that re-attaches at character `from` of the stored text: the turn's `start`,
    /// the stored text after `from` so far as one delta, then every later piece (the part after
    /// `from` of each), then the final event.
    pub fn attach(
        self: &Arc<Self>,
        reader: Arc<Reader>,
        from: usize,
        keepalive: Duration,
    ) -> impl Stream<Item = Result<Item, Lagging>> + Send + 'static {
        let (start, rest, total, next) = {
            let log = self.log();
            let start = match log.events.first().map(|e| &**e) {
                Some(LiveEvent::Start(s)) => Some(s.clone()),
                _ => None,
            };
            let rest: String = if from < log.stored_chars {
                log.stored.chars().skip(from).collect()
            } else {
                String::new()
            };
            // A turn that has ended (its final event appended, not yet forgotten) ends this
            // reader with that event too, rather than following past its end.
            let next = match log.events.last().map(|e| &**e) {
                Some(LiveEvent::Final(_)) => log.events.len() - 1,
                _ => log.events.len(),
            };
            (start, rest, log.stored_chars, next)
        };
        let mut head = Vec::new();
        head.extend(start.map(|s| Ok(Item::Start(s))));
        if !rest.is_empty() {
            reader.took(rest.len(), 0);
            head.push(Ok(Item::Delta {
                text: rest,
                pos: total,
            }));
        }
        let later = self
            .follow(reader, View::Stored, next, keepalive)
            .filter_map(move |item| std::future::ready(after(item, from)));
        futures_util::stream::iter(head).chain(later)
    }

    /// Stops the generation (the first reason given wins).
    pub fn halt(&self, why: Halt) {
        self.halt.send_if_modified(|h| {
            if h.is_none() {
                *h = Some(why);
                true
            } else {
                false
            }
        });
    }

    /// Resolves once the generation is asked to stop, with the reason.
    pub async fn halted(&self) -> Halt {
        let mut rx = self.halt.subscribe();
        loop {
            if let Some(why) = *rx.borrow_and_update() {
                return why;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// A new reader of `view` from event `from` (0: everything), on connection `conn`.
    pub fn reader(self: &Arc<Self>, view: View, conn: Option<ConnHandle>) -> Arc<Reader> {
        let reader = Arc::new(Reader {
            conn,
            view: Some(view),
            ..Reader::default()
        });
        self.log().readers.push(reader.clone());
        reader
    }

    /// The events of this turn from index `from` on, as they come, with the text `view` sees,
    /// and a keep-alive when nothing came for `keepalive`; ends after the final event, or with
    /// an error once the reader is dropped for lagging. Deltas with no text for `view` are
    /// left out.
    pub fn follow(
        self: &Arc<Self>,
        reader: Arc<Reader>,
        view: View,
        from: usize,
        keepalive: Duration,
    ) -> impl Stream<Item = Result<Item, Lagging>> + Send + 'static {
        let state = Following {
            turn: self.clone(),
            version: self.version.subscribe(),
            next: from,
            ended: false,
            guard: ReaderGuard(reader),
            keepalive,
            view,
        };
        futures_util::stream::unfold(state, |mut st| async move {
            if st.ended {
                return None;
            }
            loop {
                if st.guard.0.lagging() {
                    st.ended = true;
                    return Some((Err(Lagging), st));
                }
                st.version.borrow_and_update();
                let next = st.turn.item(st.next, st.view);
                if let Some(item) = next {
                    st.next += 1;
                    match item {
                        Some(Item::Final(event)) => {
                            st.ended = true;
                            st.guard.0.gone.store(true, Ordering::SeqCst);
                            return Some((Ok(Item::Final(event)), st));
                        }
                        Some(item) => return Some((Ok(item), st)),
                        None => continue,
                    }
                }
                tokio::select! {
                    changed = st.version.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                    }
                    () = tokio::time::sleep(st.keepalive) => {
                        return Some((Ok(Item::KeepAlive), st));
                    }
                }
            }
        })
    }
}

/// `item` without what lies before character `from` (a delta wholly before it: nothing).
fn after(item: Result<Item, Lagging>, from: usize) -> Option<Result<Item, Lagging>> {
    match item {
        Ok(Item::Delta { text, pos }) => {
            let len = text.chars().count();
            let start = pos.saturating_sub(len);
            if pos <= from {
                None
            } else if start < from {
                let text = text.chars().skip(from - start).collect();
                Some(Ok(Item::Delta { text, pos }))
            } else {
                Some(Ok(Item::Delta { text, pos }))
            }
        }
        other => Some(other),
    }
}

/// What a follower yields.
#[derive(Debug)]
pub enum Item {
    Start(Start),
    /// A piece of text for this reader's view, and the resume position after it.
    Delta {
        text: String,
        pos: usize,
    },
    /// A tool call fragment (only the view of the asking client, `Raw`, has them).
    Tool(CallFragment),
    /// Log probabilities (`Raw` only, like tool call fragments).
    Logprobs(Vec<serde_json::Value>),
    Final(StreamEvent),
    /// Nothing came for a while: a comment keeps proxies from closing the stream.
    KeepAlive,
}

impl LiveTurn {
    /// Event `index` as `view` reads it: `None` past the end; `Some(None)` for a delta with no
    /// text for this view.
    fn item(&self, index: usize, view: View) -> Option<Option<Item>> {
        let log = self.log();
        let event = log.events.get(index)?;
        Some(match &**event {
            LiveEvent::Start(start) => Some(Item::Start(start.clone())),
            LiveEvent::Final(last) => Some(Item::Final(last.clone())),
            LiveEvent::Tool(f) => (view == View::Raw).then(|| Item::Tool(f.clone())),
            LiveEvent::Logprobs(l) => (view == View::Raw).then(|| Item::Logprobs(l.clone())),
            LiveEvent::Delta { stored, raw, pos } => {
                let text = match (view, raw) {
                    (View::Raw, Some(raw)) => raw.as_str(),
                    _ => &log.stored[stored.clone()],
                };
                (!text.is_empty()).then(|| Item::Delta {
                    text: text.to_owned(),
                    pos: *pos,
                })
            }
        })
    }
}

/// The reader fell more than `MAX_CLIENT_LAG_BYTES` behind and was dropped.
#[derive(Debug, thiserror::Error)]
#[error("the client fell too far behind its stream")]
pub struct Lagging;

struct Following {
    turn: Arc<LiveTurn>,
    version: watch::Receiver<u64>,
    next: usize,
    ended: bool,
    guard: ReaderGuard,
    keepalive: Duration,
    view: View,
}

/// Marks its reader gone when the follower is dropped (the client left).
struct ReaderGuard(Arc<Reader>);

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        if !self.0.gone.swap(true, Ordering::SeqCst) && !self.0.lagging() {
            tracing::info!("client disconnected; generation goes on and will be saved");
        }
    }
}

impl Reader {
    /// Marks a reader that will read nothing (a background response's creator) as gone, quietly.
    pub fn detach(&self) {
        self.gone.store(true, Ordering::SeqCst);
    }

    /// Counts `text_bytes` of text and `frame_bytes` of response as taken.
    pub fn took(&self, text_bytes: usize, frame_bytes: usize) {
        self.taken.fetch_add(text_bytes as u64, Ordering::SeqCst);
        self.sent.fetch_add(frame_bytes as u64, Ordering::SeqCst);
    }
}

/// The live turns of this process.
pub struct Turns {
    live: Mutex<HashMap<Uuid, Arc<LiveTurn>>>,
    /// Bumped whenever a turn ends (shutdown waits on it).
    ended: tokio::sync::Notify,
    /// Once shutting down: by when every running turn must be saved or logged.
    shutdown_by: watch::Sender<Option<tokio::time::Instant>>,
}

impl Default for Turns {
    fn default() -> Self {
        Self {
            live: Mutex::default(),
            ended: tokio::sync::Notify::new(),
            shutdown_by: watch::channel(None).0,
        }
    }
}

/// What a turn leaves itself to log its record before a shutdown's deadline.
const LOG_MARGIN: Duration = Duration::from_millis(200);

impl Turns {
    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<LiveTurn>>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new turn, its `start` event already in its log.
    pub fn begin(&self, id: Uuid, owner: &str, start: Start, lag_limit: usize) -> Arc<LiveTurn> {
        let turn = Arc::new(LiveTurn::new(id, owner.to_owned(), start, lag_limit));
        self.live().insert(id, turn.clone());
        turn
    }

    /// Forgets a turn whose record is saved.
    pub fn end(&self, id: Uuid) {
        self.live().remove(&id);
        self.ended.notify_waiters();
    }

    /// Waits up to `limit` for turn `id` to end (its record saved); whether it did.
    pub async fn wait_ended(&self, id: Uuid, limit: Duration) -> bool {
        let wait = async {
            loop {
                let ended = self.ended.notified();
                if !self.live().contains_key(&id) {
                    return;
                }
                ended.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }

    /// The live turn `id` of `owner`, if this process is generating it.
    pub fn get(&self, owner: &str, id: Uuid) -> Option<Arc<LiveTurn>> {
        self.live().get(&id).filter(|t| t.owner == owner).cloned()
    }

    pub fn count(&self) -> usize {
        self.live().len()
    }

    /// By when a turn must have saved (or logged) its record: set once the process is shutting
    /// down (see [`Turns::drain`]).
    pub fn shutdown_deadline(&self) -> watch::Receiver<Option<tokio::time::Instant>> {
        self.shutdown_by.subscribe()
    }

    /// On shutdown: lets running turns finish for `grace`, then stops the rest (they are saved
    /// with error `shutdown`) and gives them `save` to be saved: each one that cannot save by
    /// then logs its record (`unsaved_record`) before this returns. Returns how many were
    /// stopped.
    pub async fn drain(&self, grace: Duration, save: Duration) -> usize {
        let _ = tokio::time::timeout(grace, self.until_empty()).await;
        let deadline = tokio::time::Instant::now() + save;
        self.shutdown_by
            .send_replace(Some(deadline.checked_sub(LOG_MARGIN).unwrap_or(deadline)));
        let running: Vec<Arc<LiveTurn>> = self.live().values().cloned().collect();
        for turn in &running {
            turn.halt(Halt::Shutdown);
        }
        if !running.is_empty() {
            tracing::warn!(
                stopped = running.len(),
                "shutting down: answers still running are stopped and saved as they are"
            );
        }
        // Every turn saves or logs by the deadline; the margin is for its last lines.
        let _ = tokio::time::timeout_at(deadline + LOG_MARGIN, self.until_empty()).await;
        running.len()
    }

    async fn until_empty(&self) {
        loop {
            let ended = self.ended.notified();
            if self.count() == 0 {
                return;
            }
            ended.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::events::{Failure, Start};

    /// A reader that re-attaches in the process generating the turn, after its final event is
    /// out but before the turn is forgotten, gets the rest and that final event; it does not
    /// follow past the end (where only keep-alives would come).
    #[tokio::test]
    async fn a_reader_attaching_after_the_final_event_ends_with_it() {
        let turns = Turns::default();
        let id = Uuid::now_v7();
        let start = Start {
            id,
            created_at: String::new(),
        };
        let turn = turns.begin(id, "o", start, 1 << 20);
        turn.push_delta("abc".into(), "abc", 3);
        turn.push_final(StreamEvent::Error(Failure {
            id,
            status: common::Status::Cancelled,
            code: "cancelled".into(),
            message: String::new(),
            flags: Vec::new(),
            saved: true,
            thread_id: id,
            context_turns: 0,
        }));
        let reader = turn.reader(View::Stored, None);
        let items: Vec<Item> = tokio::time::timeout(
            Duration::from_secs(2),
            turn.attach(reader, 1, Duration::from_millis(50))
                .map(|i| i.unwrap_or(Item::KeepAlive))
                .take_while(|i| std::future::ready(!matches!(i, Item::KeepAlive)))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap_or_default();
        assert!(matches!(items.first(), Some(Item::Start(_))), "{items:?}");
        assert!(
            matches!(items.get(1), Some(Item::Delta { text, pos: 3 }) if text == "bc"),
            "{items:?}"
        );
        assert!(matches!(items.last(), Some(Item::Final(_))), "{items:?}");
        assert_eq!(items.len(), 3, "{items:?}");
    }
}
