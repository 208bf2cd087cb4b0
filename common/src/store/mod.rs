//! Store traits, one per capability, so each handler asks only for what it uses.

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::Conversation;
use crate::error::StoreError;

mod dataapi;
mod pg;
pub(crate) mod schema;
mod sql;

use std::sync::Arc;

pub use dataapi::{DataApiStore, TEXT_BUDGET_CHARS};
pub use pg::PgStore;
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

/// Updates a running conversation and writes its end.
#[async_trait]
pub trait ConversationFinish: Send + Sync {
    /// Stores the text received so far of a row that is still `streaming`; a finished row is left
    /// untouched.
    async fn checkpoint(&self, id: Uuid, response: &str) -> Result<(), StoreError>;

    /// Writes the final state of `c`, inserting the whole record when its start was never saved.
    /// Idempotent: writing the same record twice leaves one row.
    async fn finish(&self, c: &Conversation) -> Result<(), StoreError>;
}

/// Reads one conversation.
#[async_trait]
pub trait ConversationGet: Send + Sync {
    /// Returns `None` when `owner` has no conversation with this id.
    async fn get(&self, owner: &str, id: Uuid) -> Result<Option<Conversation>, StoreError>;
}

/// Lists conversations newest first.
#[async_trait]
pub trait ConversationList: Send + Sync {
    /// Returns at most `page.limit` of `owner`'s conversations, newest first (ties by id,
    /// descending), after `page.after` when set, skipping `page.offset`.
    async fn list(&self, owner: &str, page: &PageQuery) -> Result<Vec<Conversation>, StoreError>;
}

/// Full-text search over conversations.
#[async_trait]
pub trait ConversationSearch: Send + Sync {
    /// Ranks the newest `query.candidates` conversations matching `query.text` (web search
    /// syntax) by relevance, newest first among equals, and returns one page of them with a
    /// highlighted snippet each. A query of only stop words matches nothing.
    async fn search(&self, owner: &str, query: &SearchQuery) -> Result<Vec<SearchHit>, StoreError>;
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

/// API keys: who a key belongs to, and their lifecycle.
#[async_trait]
pub trait ApiKeys: Send + Sync {
    /// The owner of the unrevoked key with this SHA-256 digest; `None` for unknown or revoked.
    async fn owner_of(&self, digest: &[u8]) -> Result<Option<String>, StoreError>;

    /// Stores a new key's digest for `owner`.
    async fn add_key(
        &self,
        id: Uuid,
        owner: &str,
        name: &str,
        digest: &[u8],
    ) -> Result<(), StoreError>;

    /// Revokes a key; returns `false` when no unrevoked key has this id.
    async fn revoke_key(&self, id: Uuid) -> Result<bool, StoreError>;
}

/// Tells whether the database answers.
#[async_trait]
pub trait HealthCheck: Send + Sync {
    /// Returns an error when the database cannot run a trivial query.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// What a stream needs of a store: write the start, checkpoints and the end.
pub trait ConversationWrite: ConversationCreate + ConversationFinish {}

impl<T: ConversationCreate + ConversationFinish> ConversationWrite for T {}

/// Every capability; what a backend implements.
pub trait Store:
    ConversationWrite + ConversationGet + ConversationList + ConversationSearch + HealthCheck
{
}

impl<T> Store for T where
    T: ConversationWrite + ConversationGet + ConversationList + ConversationSearch + HealthCheck
{
}

/// How long a `streaming` row may go without an update before it reads as interrupted: the
/// longest a stream may run (`LLM_TOTAL_TIMEOUT_MS`), plus a minute.
pub fn stale_after(settings: &crate::Settings) -> std::time::Duration {
    settings.provider.total_timeout + std::time::Duration::from_secs(60)
}

/// Applies the schema migrations.
#[async_trait]
pub trait Migrate: Send + Sync {
    /// Applies the pending migrations under a lock (one migrator at a time) and makes the search
    /// column use `search_config`; returns how many migrations were applied.
    async fn migrate(&self, search_config: &str) -> Result<usize, StoreError>;
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

/// A keyset position in the newest-first order: the last row a client has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: OffsetDateTime,
    pub id: Uuid,
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
    }
}
