//! Store traits, one per capability, so each handler asks only for what it uses.

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::Conversation;
use crate::error::StoreError;

mod background;
mod dataapi;
pub mod db;
mod delete;
mod health;
mod keys;
pub mod lifecycle;
mod pg;
pub(crate) mod schema;
mod sql;

use std::sync::Arc;

pub use background::{BackgroundRuns, TakenRun};
pub use dataapi::{DataApiStore, PIECE_CHARS, TEXT_BUDGET_BYTES};
pub use health::CachedHealth;
pub use lifecycle::Lifecycle;
pub use pg::PgStore;
pub use schema::SEARCH_INDEX_DDL;
pub use sql::{search_sql, search_window_sql};

/// The store the settings name: a pool for `DATABASE_URL`, the RDS Data API for
/// `DB_CLUSTER_ARN`. Nothing touches the network until the first query.
pub fn from_settings(
    settings: &crate::Settings,
) -> Result<Arc<dyn Backend>, crate::settings::SettingsError> {
    from_settings_in(settings, &crate::settings::ProcessEnv)
}

/// [`from_settings`], with the AWS credentials of the Data API read from `env`.
pub fn from_settings_in(
    settings: &crate::Settings,
    env: &dyn crate::settings::Env,
) -> Result<Arc<dyn Backend>, crate::settings::SettingsError> {
    Ok(match &settings.db.target {
        crate::settings::DbTarget::Url(_) => Arc::new(PgStore::from_settings(settings)?),
        crate::settings::DbTarget::DataApi(target) => {
            Arc::new(DataApiStore::from_settings(settings, target, env)?)
        }
    })
}

/// Writes the first row of a conversation.
#[async_trait]
pub trait ConversationCreate: Send + Sync {
    /// Inserts `c` as it is at the start. Does nothing when a row with its id already exists.
    async fn create(&self, c: &Conversation) -> Result<(), StoreError>;
}

/// What a checkpoint learned about its turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checkpointed {
    /// A client asked (`POST /stream/{id}/cancel`, from any process) to stop this turn.
    pub cancel_requested: bool,
    /// The turn's row was there before this checkpoint (false when this checkpoint wrote it,
    /// or when it is gone: its thread was deleted).
    pub found: bool,
}

/// Writes a running turn's log and its end.
#[async_trait]
pub trait ConversationFinish: Send + Sync {
    /// One checkpoint: writes the turn's row from `start` first when it may be missing (the
    /// first insert failed), appends `piece` (its position, in characters of the stored text,
    /// and the text from there) to the turn's log, and reads whether a cancel was asked for.
    /// Appending the same piece twice keeps one. The cost is that of the new text, never of the
    /// whole answer.
    async fn checkpoint(
        &self,
        start: Option<&Conversation>,
        id: Uuid,
        piece: Option<(i64, &str)>,
    ) -> Result<Checkpointed, StoreError>;

    /// Writes the final state of `c`, inserting the whole record when its start was never saved,
    /// and drops the turn's log (its text is now the record's `response`). Idempotent: writing
    /// the same record twice leaves one row.
    async fn finish(&self, c: &Conversation) -> Result<(), StoreError>;
}

/// Reads one conversation.
#[async_trait]
pub trait ConversationGet: Send + Sync {
    /// Returns `None` when `owner` has no conversation with this id.
    async fn get(&self, owner: &str, id: Uuid) -> Result<Option<Conversation>, StoreError>;
}

/// One page of a list, and whether more follow it.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed<T> {
    pub items: Vec<T>,
    /// At least one more item follows the page.
    pub more: bool,
}

impl<T> Listed<T> {
    /// The page from rows read with one extra (the probe that tells whether more follow); the
    /// extra row is never decoded.
    pub fn from_probe<R, E>(
        rows: Vec<R>,
        limit: i64,
        decode: impl Fn(&R) -> Result<T, E>,
    ) -> Result<Self, E> {
        let limit = usize::try_from(limit).unwrap_or(0);
        let more = rows.len() > limit;
        let items = rows
            .iter()
            .take(limit)
            .map(decode)
            .collect::<Result<_, _>>()?;
        Ok(Self { items, more })
    }
}

/// Lists conversations newest first.
#[async_trait]
pub trait ConversationList: Send + Sync {
    /// Returns at most `page.limit` of `owner`'s conversations, newest first (ties by id,
    /// descending), after `page.after` when set, skipping `page.offset`, and whether more follow.
    async fn list(&self, owner: &str, page: &PageQuery)
    -> Result<Listed<Conversation>, StoreError>;
}

/// Full-text search over conversations.
#[async_trait]
pub trait ConversationSearch: Send + Sync {
    /// Ranks the newest `query.candidates` conversations matching `query.text` (web search
    /// syntax) by relevance, newest first among equals, and returns one page of them with a
    /// highlighted snippet each, and whether more candidates follow. A query of only stop words
    /// matches nothing.
    async fn search(
        &self,
        owner: &str,
        query: &SearchQuery,
    ) -> Result<Listed<SearchHit>, StoreError>;
}

/// A search request, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    /// Words as users type them: `"exact phrase"`, `or`, `-excluded`.
    pub text: String,
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
    pub limit: i64,
    pub offset: i64,
    /// How many of the newest matches are ranked (bounds the work of broad queries).
    pub candidates: i64,
}

/// One search result: the conversation, its rank and a snippet with `<mark>` around matches.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SearchHit {
    #[serde(flatten)]
    pub conversation: Conversation,
    /// PostgreSQL's `ts_rank` (prompt words weigh more than answer words).
    pub rank: f32,
    /// Matching fragments, matches in `<mark>…</mark>`.
    pub snippet: String,
}

/// API keys: who a key belongs to, its limits, and their lifecycle.
#[async_trait]
pub trait ApiKeys: Send + Sync {
    /// The unrevoked key with this SHA-256 digest; `None` for unknown or revoked.
    async fn key_of(&self, digest: &[u8]) -> Result<Option<KeyRecord>, StoreError>;

    /// Stores a new key's digest for `owner`, with `limits`.
    async fn add_key(
        &self,
        id: Uuid,
        owner: &str,
        name: &str,
        digest: &[u8],
        limits: &crate::spend::KeyLimits,
    ) -> Result<(), StoreError>;

    /// Replaces an unrevoked key's limits; `false` when there is no such key.
    async fn set_limits(
        &self,
        id: Uuid,
        limits: &crate::spend::KeyLimits,
    ) -> Result<bool, StoreError>;

    /// Revokes a key; returns `false` when no unrevoked key has this id.
    async fn revoke_key(&self, id: Uuid) -> Result<bool, StoreError>;

    /// Every key (never the key itself, which is not stored), by owner and age, with its
    /// limits and what it has spent this period.
    async fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError>;
}

/// The key a request presented.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub id: Uuid,
    pub owner: String,
    pub limits: crate::spend::KeyLimits,
}

/// What is known of an API key.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: Uuid,
    pub owner: String,
    pub name: String,
    pub created_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
    pub limits: crate::spend::KeyLimits,
    pub spend: crate::spend::KeySpend,
}

/// Holding a limited key's requests to its limits (see migration V12).
#[async_trait]
pub trait Spend: Send + Sync {
    /// Reserves `r`'s worst case against its key's limits in one statement, or says which
    /// limit refuses it (`None`: admitted).
    async fn reserve(
        &self,
        r: &crate::spend::Reservation,
    ) -> Result<Option<crate::spend::Refusal>, StoreError>;

    /// Settles a reservation whose turn's final record is not written (its thread was
    /// deleted); a written record settles its reservation itself.
    async fn settle(
        &self,
        turn_id: Uuid,
        model: &str,
        prompt_tokens: i64,
        completion_tokens: i64,
        usd: f64,
    ) -> Result<(), StoreError>;
}

/// What deleting one turn found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnDeleted {
    Deleted,
    NotFound,
    /// It has not ended yet.
    Running,
    /// A later turn continues it (names it as its previous one).
    Continued,
}

/// Deleting one turn.
#[async_trait]
pub trait TurnDelete: Send + Sync {
    /// Deletes `owner`'s turn `id` unless it runs or a later turn continues it; a thread's only
    /// turn takes its thread with it. Its usage stays counted.
    async fn delete_turn(&self, owner: &str, id: Uuid) -> Result<TurnDeleted, StoreError>;
}

/// A range of an owner's turns for `GET /export`, oldest first: created at or after `from`,
/// before `to`, after the keyset position `after` (the last turn sent), at most `limit`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportQuery {
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
    pub after: Option<Cursor>,
    pub limit: i64,
}

/// Reading an owner's turns out, oldest first.
#[async_trait]
pub trait ConversationExport: Send + Sync {
    /// One page of `owner`'s turns in `query`'s range, oldest first (ties by id), whole.
    async fn export_page(
        &self,
        owner: &str,
        query: &ExportQuery,
    ) -> Result<Vec<Conversation>, StoreError>;
}

/// Usage reports, from the daily rollup.
#[async_trait]
pub trait UsageReport: Send + Sync {
    /// `owner`'s usage in `query`'s window by its grouping, and the total.
    async fn usage(
        &self,
        owner: &str,
        query: &crate::spend::UsageQuery,
    ) -> Result<(Vec<crate::spend::UsageLine>, crate::spend::UsageLine), StoreError>;

    /// What key `key_id` has spent this period and holds in flight; `None`: no such key.
    async fn key_spend(&self, key_id: Uuid) -> Result<Option<crate::spend::KeySpend>, StoreError>;
}

/// A turn along a chain, as a continuation needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainTurn {
    pub id: Uuid,
    pub thread_id: Uuid,
    pub prompt: String,
    /// Its answer, or the text so far of a turn still running.
    pub response: String,
    pub status: crate::Status,
    /// The instructions it ran under.
    pub system: Option<String>,
}

/// Loads what a new turn continues.
#[async_trait]
pub trait ConversationChain: Send + Sync {
    /// The turns along the chain that ends at `owner`'s turn `id`, newest first (that turn,
    /// then the one it continues, and so on), as far back as their prompts and answers together
    /// stay within `budget` characters, plus the one that crosses it. `None` when `owner` has no
    /// turn `id`. A turn left `streaming` by a writer that died reads as `partial`.
    async fn chain(
        &self,
        owner: &str,
        id: Uuid,
        budget: i64,
    ) -> Result<Option<Vec<ChainTurn>>, StoreError>;
}

/// A turn read from a position of its stored text, for a client that re-attaches.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRead {
    /// The turn (its `response` left empty: the text read is `text`). A turn left `streaming`
    /// by a writer that died reads as ended (`partial`, `interrupted`).
    pub turn: Conversation,
    /// At most the asked number of characters of the stored text from the asked position on:
    /// the log so far while the turn runs, its answer once it has ended.
    pub text: String,
    /// How long the stored text is so far, in characters.
    pub total: i64,
}

/// What a cancel request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The turn is running: it will stop at its next checkpoint.
    Requested,
    /// The turn has ended (with this status).
    Finished(crate::Status),
    /// No turn of the caller's has this id.
    NotFound,
}

/// Re-attaching to a turn and stopping one, from any process.
#[async_trait]
pub trait ConversationLog: Send + Sync {
    /// `owner`'s turn `id`, with at most `max_chars` characters of its stored text from
    /// character `from` on; `None` when there is no such turn.
    async fn read_log(
        &self,
        owner: &str,
        id: Uuid,
        from: i64,
        max_chars: i64,
    ) -> Result<Option<LogRead>, StoreError>;

    /// Asks the process generating `owner`'s turn `id` to stop it (it reads the request at its
    /// next checkpoint).
    async fn request_cancel(&self, owner: &str, id: Uuid) -> Result<CancelOutcome, StoreError>;
}

/// Threads: listing, reading and deleting.
#[async_trait]
pub trait ThreadStore: Send + Sync {
    /// At most `page.limit` of `owner`'s threads, most recently active first (ties by id),
    /// after `page.after` (a position in that order: latest activity and id), and whether more
    /// follow. `page.offset` is ignored.
    async fn threads(
        &self,
        owner: &str,
        page: &PageQuery,
    ) -> Result<Listed<crate::domain::Thread>, StoreError>;

    /// `owner`'s thread `id` and a page of its turns, oldest first (ties by id): at most
    /// `page.limit`, after `page.after` (a turn's position in that order), and whether more
    /// follow; `None` when there is no such thread. `page.offset` is ignored.
    async fn thread(
        &self,
        owner: &str,
        id: Uuid,
        page: &PageQuery,
    ) -> Result<Option<(crate::domain::Thread, Listed<Conversation>)>, StoreError>;

    /// Deletes `owner`'s thread `id` and every turn of it (from history and search too);
    /// `false` when there was none. A turn of it still running does not bring it back.
    async fn delete_thread(&self, owner: &str, id: Uuid) -> Result<bool, StoreError>;
}

/// Tells whether the database answers.
#[async_trait]
pub trait HealthCheck: Send + Sync {
    /// Returns an error when the database cannot run a trivial query.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// What the stream function needs of a store: load the chain a turn continues, write the start,
/// checkpoints and the end, and serve re-attaching and cancelling clients.
pub trait ConversationWrite:
    ConversationCreate
    + ConversationFinish
    + ConversationChain
    + ConversationLog
    + ConversationGet
    + Spend
    + TurnDelete
    + BackgroundRuns
{
}

impl<T> ConversationWrite for T where
    T: ConversationCreate
        + ConversationFinish
        + ConversationChain
        + ConversationLog
        + ConversationGet
        + Spend
        + TurnDelete
        + BackgroundRuns
{
}

/// Every capability; what a backend implements.
pub trait Store:
    ConversationWrite
    + ConversationGet
    + ConversationList
    + ConversationSearch
    + ConversationChain
    + ThreadStore
    + UsageReport
    + ConversationExport
    + Lifecycle
    + HealthCheck
{
}

impl<T> Store for T where
    T: ConversationWrite
        + ConversationGet
        + ConversationList
        + ConversationSearch
        + ConversationChain
        + ThreadStore
        + UsageReport
        + ConversationExport
        + Lifecycle
        + HealthCheck
{
}

/// How long after its start a `streaming` row reads as interrupted: the longest a stream may
/// run (`LLM_TOTAL_TIMEOUT_MS`), plus the longest its end may take (a grounding check within
/// `LLM_FIRST_CHUNK_TIMEOUT_MS`, saving within `DB_SAVE_BUDGET_MS`), plus a minute.
pub fn stale_after(settings: &crate::Settings) -> std::time::Duration {
    settings.provider.total_timeout
        + settings.provider.first_chunk_timeout
        + settings.db.save_budget
        + std::time::Duration::from_secs(60)
}

/// How long a `streaming` turn may go without a heartbeat (each checkpoint writes one) before it
/// reads as interrupted: five checkpoint intervals (10 s by default), at least 2 s.
pub fn heartbeat_stale(settings: &crate::Settings) -> std::time::Duration {
    (5 * settings.stream.checkpoint_interval).max(std::time::Duration::from_secs(2))
}

/// [`heartbeat_stale`] at the default checkpoint interval.
pub const HEARTBEAT_STALE_DEFAULT: std::time::Duration = std::time::Duration::from_secs(10);

/// Applies the schema migrations.
#[async_trait]
pub trait Migrate: Send + Sync {
    /// Applies the pending migrations under a lock (one migrator at a time) and makes the search
    /// column use `search_config`; returns how many migrations were applied.
    async fn migrate(&self, search_config: &str) -> Result<usize, StoreError>;

    /// Makes (or updates) the login role `name` with `password`, member of `groups`
    /// (comma-separated roles of migration V9), through `llm_stream_login`.
    async fn ensure_login(
        &self,
        name: &str,
        password: &str,
        groups: &str,
    ) -> Result<(), StoreError>;
}

/// A whole backend: every store capability, API keys and migrations.
pub trait Backend: Store + ApiKeys + Migrate {}

impl<T> Backend for T where T: Store + ApiKeys + Migrate {}

/// A page request: `limit` rows, after the keyset position `after` (if any), skipping `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageQuery {
    pub limit: i64,
    pub offset: i64,
    pub after: Option<Cursor>,
}

/// A keyset position in a newest-first order: the last row a client has seen (for threads, its
/// latest activity rather than its creation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: OffsetDateTime,
    pub id: Uuid,
}

/// Whether both store backends can take `t`: years 1 to 9999 (PostgreSQL's own range is wider,
/// but the Data API writes timestamps as `YYYY-MM-DD` text, and nothing real lies outside).
pub fn storable_time(t: OffsetDateTime) -> bool {
    (1..=9999).contains(&t.year())
}

impl Cursor {
    /// The position just after `c`.
    pub fn after(c: &Conversation) -> Self {
        Self {
            created_at: c.created_at,
            id: c.id,
        }
    }

    /// An opaque token: base64url of the timestamp in microseconds and the id.
    pub fn encode(&self) -> String {
        let micros = self.created_at.unix_timestamp_nanos() / 1000;
        URL_SAFE_NO_PAD.encode(format!("{micros}.{}", self.id.simple()))
    }

    /// Parses a token made by [`Cursor::encode`]; `None` for anything else.
    pub fn decode(token: &str) -> Option<Self> {
        let raw = URL_SAFE_NO_PAD.decode(token.as_bytes()).ok()?;
        let raw = std::str::from_utf8(&raw).ok()?;
        let (micros, id) = raw.split_once('.')?;
        let micros: i128 = micros.parse().ok()?;
        let created_at =
            OffsetDateTime::from_unix_timestamp_nanos(micros.checked_mul(1000)?).ok()?;
        if !storable_time(created_at) {
            return None;
        }
        let id = Uuid::try_parse(id).ok()?;
        Some(Self { created_at, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Conversation::start("local", "p".into(), "offline", "m");
        let cur = Cursor::after(&c);
        assert_eq!(Cursor::decode(&cur.encode()), Some(cur));
        for bad in ["", "!!!", "bm9wZQ", "MTIzLm5vdC1hLXV1aWQ"] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
        // Times no store can take are not cursors either.
        for micros in [
            "-300000000000000000",
            "-62135596800000001",
            "253402300800000000",
        ] {
            let token = URL_SAFE_NO_PAD.encode(format!("{micros}.{}", c.id.simple()));
            assert_eq!(Cursor::decode(&token), None, "{micros}");
        }
    }
}
