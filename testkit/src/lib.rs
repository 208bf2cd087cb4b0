//! Test support: a fresh, migrated PostgreSQL database per test (dropped afterwards), and a local
//! OpenAI-compatible server that writes the real SSE wire format, failure modes included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod call;
pub mod data_api;
pub mod fake_bedrock;
pub mod fake_openai;
pub mod fake_secrets;
pub mod pg_cluster;
pub mod process;
pub mod proxy;
pub mod runtime_api;
pub mod script;
pub mod sse;

use std::collections::HashMap;
use std::time::Duration;

use common::Settings;
use common::domain::now_micros;
use common::store::PgStore;
use common::{Conversation, Status};

/// The server tests create their databases on: `TEST_DATABASE_URL`, else `DATABASE_URL`, else
/// the local PostgreSQL.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A page large enough for every turn of a test's thread.
pub fn whole_thread() -> common::store::PageQuery {
    common::store::PageQuery {
        limit: 100,
        offset: 0,
        after: None,
    }
}

/// An HTTP client for tests (ring as the TLS provider).
pub fn http_client() -> reqwest::Client {
    common::install_crypto_provider();
    reqwest::Client::new()
}

/// A database made for one test, migrated, and dropped when this value is dropped.
pub struct TestDb {
    pub url: String,
    name: String,
    admin: String,
}

/// How many migration files `migrations/` holds.
pub fn migration_files() -> usize {
    std::fs::read_dir(process::workspace_root().join("migrations"))
        .expect("migrations/")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".sql"))
        })
        .count()
}

/// The cluster and secret ARNs tests give the Data API backend (the local endpoint checks
/// they are present, as the service does).
pub const TEST_CLUSTER_ARN: &str = "arn:aws:rds:us-east-1:000000000000:cluster:local";
pub const TEST_SECRET_ARN: &str = "arn:aws:secretsmanager:us-east-1:000000000000:secret:local";

impl TestDb {
    /// A fresh database, migrated through the pool.
    pub async fn new() -> Self {
        let db = Self::blank().await;
        let pool = common::db::pool(&db.settings().db).expect("pool");
        common::db::migrate(&pool, &db.settings().db.search_config)
            .await
            .expect("migrate");
        pool.close();
        db
    }

    /// A fresh, empty database (no migrations applied).
    pub async fn blank() -> Self {
        let admin = admin_url();
        let name = format!("test_{}", uuid::Uuid::now_v7().simple());
        let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at {admin}: {e}"));
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let url = replace_db_name(&admin, &name);
        Self { url, name, admin }
    }

    /// The name of this database.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The environment of Data API mode for this database behind `endpoint` (test credentials),
    /// with `extra` variables.
    pub fn data_api_env<'a>(
        &'a self,
        endpoint: &'a str,
        extra: &[(&'a str, &'a str)],
    ) -> HashMap<&'a str, &'a str> {
        let mut env: HashMap<&str, &str> = HashMap::new();
        env.insert("DB_CLUSTER_ARN", TEST_CLUSTER_ARN);
        env.insert("DB_SECRET_ARN", TEST_SECRET_ARN);
        env.insert("DB_NAME", &self.name);
        env.insert("AWS_ENDPOINT_URL_RDS_DATA", endpoint);
        env.insert("AWS_ACCESS_KEY_ID", "AKIDLOCAL");
        env.insert("AWS_SECRET_ACCESS_KEY", "local-secret");
        env.insert("DB_CONNECT_TIMEOUT_MS", "2000");
        for (k, v) in extra {
            env.insert(k, v);
        }
        env
    }

    /// The backend the settings select: the pool (`endpoint` `None`) or the Data API behind
    /// `endpoint`, with `extra` variables.
    pub fn backend(
        &self,
        endpoint: Option<&str>,
        extra: &[(&str, &str)],
    ) -> std::sync::Arc<dyn common::store::Backend> {
        match endpoint {
            None => common::store::from_settings(&self.settings_with(extra)).expect("pool backend"),
            Some(endpoint) => {
                let env = self.data_api_env(endpoint, extra);
                let settings = Settings::from_source(&env).expect("Data API settings");
                common::store::from_settings_in(&settings, &env).expect("Data API backend")
            }
        }
    }

    /// Settings for this database with the given extra variables (offline provider by default).
    pub fn settings_with(&self, extra: &[(&str, &str)]) -> Settings {
        let mut env: HashMap<&str, &str> = HashMap::new();
        env.insert("DATABASE_URL", &self.url);
        env.insert("DB_CONNECT_TIMEOUT_MS", "2000");
        for (k, v) in extra {
            env.insert(k, v);
        }
        Settings::from_source(&env).expect("test settings")
    }

    pub fn settings(&self) -> Settings {
        self.settings_with(&[])
    }

    /// A store on this database.
    pub fn store(&self) -> PgStore {
        let s = self.settings();
        PgStore::new(
            common::db::pool(&s.db).expect("pool"),
            common::store::stale_after(&s),
        )
    }

    /// A new API key of `owner`, named `name`, stored as `local key create` stores it; returns
    /// the key.
    pub async fn key(&self, owner: &str, name: &str) -> String {
        self.limited_key(owner, name, &common::spend::KeyLimits::default())
            .await
            .1
    }

    /// A new API key of `owner` with `limits`; returns its id and the key.
    pub async fn limited_key(
        &self,
        owner: &str,
        name: &str,
        limits: &common::spend::KeyLimits,
    ) -> (uuid::Uuid, String) {
        use common::store::ApiKeys;
        let key = common::auth::new_key().expect("new key");
        let id = uuid::Uuid::now_v7();
        self.store()
            .add_key(id, owner, name, &common::auth::digest(&key), limits)
            .await
            .expect("add key");
        (id, key)
    }

    /// How many API keys are stored.
    pub async fn count_keys(&self) -> i64 {
        self.client()
            .await
            .query_one("SELECT count(*) FROM api_keys", &[])
            .await
            .expect("count keys")
            .get(0)
    }

    /// The plan PostgreSQL chooses for `sql` with these parameters, one line per node.
    pub async fn explain(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> String {
        let client = self.client().await;
        client
            .batch_execute("ANALYZE conversations")
            .await
            .expect("analyze");
        client
            .query(&format!("EXPLAIN {sql}"), params)
            .await
            .expect("explain")
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// How many conversations the table holds.
    pub async fn count(&self) -> i64 {
        self.client()
            .await
            .query_one("SELECT count(*) FROM conversations", &[])
            .await
            .expect("count")
            .get(0)
    }

    /// How many conversations match `condition` (SQL, written by the test itself).
    pub async fn count_where(&self, condition: &str) -> i64 {
        self.client()
            .await
            .query_one(
                &format!("SELECT count(*) FROM conversations WHERE {condition}"),
                &[],
            )
            .await
            .expect("count")
            .get(0)
    }

    /// A plain client, for checks the store does not offer.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop runs outside async: use a small runtime on its own thread.
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&admin, tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client.batch_execute(&sql).await;
                }
            });
        });
        let _ = handle.join();
    }
}

/// Inserts `n` complete conversations in one statement, newest last; every `tie_every` rows share
/// one `created_at` (to test ordering among equal timestamps). Returns them oldest first.
pub async fn seed(db: &TestDb, n: usize, tie_every: usize) -> Vec<Conversation> {
    seed_owned(db, common::auth::LOCAL_OWNER, n, tie_every).await
}

/// [`seed`] for a given owner.
pub async fn seed_owned(db: &TestDb, owner: &str, n: usize, tie_every: usize) -> Vec<Conversation> {
    let base = now_micros() - Duration::from_secs(n as u64 + 10);
    let rows: Vec<Conversation> = (0..n)
        .map(|i| {
            let mut c = Conversation::start(owner, format!("prompt {i}"), "offline", "seed");
            c.response = format!("response {i}");
            c.status = Status::Complete;
            c.created_at = base + Duration::from_secs((i / tie_every.max(1)) as u64);
            c.updated_at = c.created_at;
            c
        })
        .collect();
    let ids: Vec<uuid::Uuid> = rows.iter().map(|c| c.id).collect();
    let prompts: Vec<&str> = rows.iter().map(|c| c.prompt.as_str()).collect();
    let responses: Vec<&str> = rows.iter().map(|c| c.response.as_str()).collect();
    let times: Vec<time::OffsetDateTime> = rows.iter().map(|c| c.created_at).collect();
    db.client()
        .await
        .execute(
            "INSERT INTO conversations (id, owner, prompt, response, status, provider, model, created_at, updated_at) \
             SELECT id, $5, p, r, 'complete', 'offline', 'seed', t, t \
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[]) AS x(id, p, r, t)",
            &[&ids, &prompts, &responses, &times, &owner],
        )
        .await
        .expect("seed");
    rows
}

/// `postgres://u@h:p/old?x` with the database name replaced.
fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{name}?{q}"),
        None => format!("{host_part}/{name}"),
    }
}

/// The turn `id` of `owner` once it has left `streaming` (waits up to 15 s).
pub async fn finished(
    store: &dyn common::store::ConversationGet,
    owner: &str,
    id: uuid::Uuid,
) -> Conversation {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        if let Some(c) = store.get(owner, id).await.unwrap()
            && c.status != common::Status::Streaming
        {
            return c;
        }
        assert!(std::time::Instant::now() < until, "row {id} never finished");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Runs each named test body (`async fn name(data_api: bool)`, at the test crate's root) twice,
/// as `pool::name` on the connection pool and as `data_api::name` on the Data API backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod pool {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(false).await;
                }
            )*
        }
        mod data_api {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(true).await;
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            super::replace_db_name("postgres://u@h:5432/postgres?sslmode=disable", "t1"),
            "postgres://u@h:5432/t1?sslmode=disable"
        );
        assert_eq!(
            super::replace_db_name("postgres://u@h", "t1"),
            "postgres://u@h/t1"
        );
    }
}
