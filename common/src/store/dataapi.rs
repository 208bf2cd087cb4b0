//! The RDS Data API store backend: every statement is one HTTPS call, no connection and no VPC,
//! so the stream function can sit behind a streaming function URL (which cannot be in a VPC).
//!
//! Types are mapped explicitly in the SQL, not left to the service: parameters are cast
//! (`CAST(:id AS uuid)`, timestamps as UTC `timestamp` values turned into `timestamptz`) and sent
//! with their type hint; results come back as text (`id::text`, `flags::text`, timestamps through
//! `to_char` in UTC) or as longs, so decoding never depends on the service's rendering.
//!
//! One Data API response carries at most 1 MiB. Text columns are therefore read as a bounded
//! prefix with their length, and what a prefix missed is read in further bounded calls.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_rdsdata::Client;
use aws_sdk_rdsdata::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_rdsdata::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_rdsdata::types::{Field, SqlParameter, TypeHint};
use time::OffsetDateTime;
use time::macros::format_description;
use uuid::Uuid;

use super::{
    ApiKeys, ConversationCreate, ConversationFinish, ConversationGet, ConversationList,
    ConversationSearch, HealthCheck, Migrate, PageQuery, SearchHit, SearchQuery,
};
use crate::domain::{Conversation, Status, now_micros};
use crate::error::StoreError;
use crate::settings::{DataApiSettings, SettingsError};

/// How many characters of text one call returns at most (all rows and columns together).
/// At most 6 bytes each once JSON-escaped: 720 KB, under the 1 MiB response limit.
pub const TEXT_BUDGET_CHARS: i64 = 120_000;

/// The advisory lock the migrations hold (the same as the pool's).
const MIGRATION_LOCK: i64 = 0x6c6c_6d73_7472_6d31;

/// The conversation columns, with explicit text forms; `q` qualifies them (`"c."` or `""`).
/// Positions: 0 id .. 15 updated_at, 16 and 17 the full lengths of prompt and response.
fn columns(q: &str) -> String {
    format!(
        "{q}id::text, {q}owner, substr({q}prompt, 1, CAST(:text_chars AS int4)), \
         substr({q}response, 1, CAST(:text_chars AS int4)), {q}status, {q}error, {q}provider, \
         {q}model, {q}prompt_tokens, {q}completion_tokens, {q}total_tokens, {q}flags::text, \
         {q}ttfb_ms, {q}duration_ms, {ca}, {ua}, char_length({q}prompt), \
         char_length({q}response)",
        ca = utc_text(&format!("{q}created_at")),
        ua = utc_text(&format!("{q}updated_at")),
    )
}

/// A `timestamptz` column as UTC text with microseconds.
fn utc_text(column: &str) -> String {
    format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
}

/// A timestamp parameter, sent as UTC, as a `timestamptz`.
fn utc_param(name: &str) -> String {
    format!("(CAST(:{name} AS timestamp) AT TIME ZONE 'UTC')")
}

/// Conversations through the RDS Data API.
#[derive(Clone)]
pub struct DataApiStore {
    client: Client,
    cluster_arn: String,
    secret_arn: String,
    database: String,
    stale_after: Duration,
    search_sql: String,
    search_window_sql: String,
}

impl DataApiStore {
    /// A client for `target`, with the credentials of the environment (Lambda provides them).
    pub fn new(
        target: &DataApiSettings,
        credentials: Credentials,
        connect_timeout: Duration,
        call_timeout: Duration,
        stale_after: Duration,
        search_config: &str,
    ) -> Self {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut config = aws_sdk_rdsdata::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(target.region.clone()))
            .credentials_provider(credentials)
            .http_client(http)
            .timeout_config(
                aws_sdk_rdsdata::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(connect_timeout)
                    .operation_attempt_timeout(call_timeout)
                    .build(),
            );
        if let Some(url) = &target.endpoint_url {
            config = config.endpoint_url(url);
        }
        Self {
            client: Client::from_conf(config.build()),
            cluster_arn: target.cluster_arn.clone(),
            secret_arn: target.secret_arn.clone(),
            database: target.database.clone(),
            stale_after,
            search_sql: data_api_search(&super::search_sql(search_config)),
            search_window_sql: data_api_search(&super::search_window_sql(search_config)),
        }
    }

    /// The store the functions use in Data API mode: credentials from `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, as Lambda sets them.
    pub fn from_settings(
        settings: &crate::Settings,
        target: &DataApiSettings,
        env: &dyn crate::settings::Env,
    ) -> Result<Self, SettingsError> {
        let missing = |name| SettingsError::Missing {
            name,
            hint: "AWS credentials for the Data API (Lambda sets them; locally: \
                   eval \"$(aws configure export-credentials --format env)\")",
        };
        let credentials = Credentials::new(
            env.var("AWS_ACCESS_KEY_ID")
                .ok_or_else(|| missing("AWS_ACCESS_KEY_ID"))?,
            env.var("AWS_SECRET_ACCESS_KEY")
                .ok_or_else(|| missing("AWS_SECRET_ACCESS_KEY"))?,
            env.var("AWS_SESSION_TOKEN"),
            None,
            "environment",
        );
        Ok(Self::new(
            target,
            credentials,
            settings.db.connect_timeout,
            // The statement timeout applies on the server side with a pool; here it bounds the
            // whole call (plus the time the service takes to answer).
            settings.db.statement_timeout + Duration::from_secs(5),
            super::stale_after(settings),
            &settings.db.search_config,
        ))
    }

    async fn exec(
        &self,
        sql: &str,
        params: Vec<SqlParameter>,
        transaction: Option<&str>,
    ) -> Result<aws_sdk_rdsdata::operation::execute_statement::ExecuteStatementOutput, StoreError>
    {
        self.client
            .execute_statement()
            .resource_arn(&self.cluster_arn)
            .secret_arn(&self.secret_arn)
            .database(&self.database)
            .sql(sql)
            .set_parameters(Some(params))
            .set_transaction_id(transaction.map(str::to_owned))
            .send()
            .await
            .map_err(sdk_error)
    }

    /// Runs `sql` (which selects [`columns`] first) for at most `rows_at_most` rows, reading each
    /// text column as a prefix sized to the page.
    async fn records(
        &self,
        sql: &str,
        mut params: Vec<SqlParameter>,
        rows_at_most: i64,
    ) -> Result<Vec<Vec<Field>>, StoreError> {
        params.push(long("text_chars", text_chars(rows_at_most)));
        Ok(self
            .exec(sql, params, None)
            .await?
            .records
            .unwrap_or_default())
    }

    /// The conversation of each record, its long text completed, with `extra(record)`.
    async fn conversations<T>(
        &self,
        records: Vec<Vec<Field>>,
        extra: impl Fn(&[Field]) -> Result<T, StoreError> + Send + Sync,
    ) -> Result<Vec<(Conversation, T)>, StoreError>
    where
        T: Send,
    {
        let mut result = Vec::with_capacity(records.len());
        for record in records {
            let mut c = decode(&record)?;
            let prompt_len = long_at(&record, 16, "prompt")?;
            let response_len = long_at(&record, 17, "response")?;
            let more = extra(&record)?;
            drop(record);
            self.complete(c.id, "prompt", &mut c.prompt, prompt_len)
                .await?;
            self.complete(c.id, "response", &mut c.response, response_len)
                .await?;
            result.push((c.settle(self.stale_after, now_micros()), more));
        }
        Ok(result)
    }

    /// Appends to `text` what its prefix missed, `TEXT_BUDGET_CHARS` per call.
    async fn complete(
        &self,
        id: Uuid,
        column: &'static str,
        text: &mut String,
        full_len: i64,
    ) -> Result<(), StoreError> {
        let mut have = text.chars().count() as i64;
        while have < full_len {
            let sql = format!(
                "SELECT substr({column}, CAST(:from AS int4), CAST(:n AS int4)) \
                 FROM conversations WHERE id = CAST(:id AS uuid)"
            );
            let out = self
                .exec(
                    &sql,
                    vec![
                        long("from", have + 1),
                        long("n", TEXT_BUDGET_CHARS),
                        uuid("id", id),
                    ],
                    None,
                )
                .await?;
            let Some(record) = out.records().first() else {
                // The row went away between the calls: keep what was read.
                return Ok(());
            };
            let piece = string_at(record, 0, column)?;
            if piece.is_empty() {
                return Ok(());
            }
            have += piece.chars().count() as i64;
            text.push_str(&piece);
        }
        Ok(())
    }

    async fn begin(&self) -> Result<String, StoreError> {
        let out = self
            .client
            .begin_transaction()
            .resource_arn(&self.cluster_arn)
            .secret_arn(&self.secret_arn)
            .database(&self.database)
            .send()
            .await
            .map_err(sdk_error)?;
        out.transaction_id()
            .map(str::to_owned)
            .ok_or(StoreError::Decode {
                column: "transactionId",
            })
    }

    async fn end(&self, transaction: &str, commit: bool) -> Result<(), StoreError> {
        if commit {
            self.client
                .commit_transaction()
                .resource_arn(&self.cluster_arn)
                .secret_arn(&self.secret_arn)
                .transaction_id(transaction)
                .send()
                .await
                .map_err(sdk_error)?;
        } else {
            self.client
                .rollback_transaction()
                .resource_arn(&self.cluster_arn)
                .secret_arn(&self.secret_arn)
                .transaction_id(transaction)
                .send()
                .await
                .map_err(sdk_error)?;
        }
        Ok(())
    }

    /// The migration work inside one transaction: lock, history, pending files, search config.
    async fn migrate_in(&self, tx: &str, search_config: &str) -> Result<usize, StoreError> {
        let t = Some(tx);
        self.exec(
            "SELECT 1 FROM (SELECT pg_advisory_xact_lock(CAST(:lock AS int8))) l",
            vec![long("lock", MIGRATION_LOCK)],
            t,
        )
        .await?;
        // The table refinery keeps: both modes share one history.
        self.exec(
            "CREATE TABLE IF NOT EXISTS refinery_schema_history (version int4 PRIMARY KEY, \
             name varchar(255), applied_on varchar(255), checksum varchar(255))",
            vec![],
            t,
        )
        .await?;
        let applied = self
            .exec(
                "SELECT version, checksum FROM refinery_schema_history",
                vec![],
                t,
            )
            .await?;
        let mut done = std::collections::HashMap::new();
        for r in applied.records() {
            done.insert(long_at(r, 0, "version")?, string_at(r, 1, "checksum")?);
        }
        let mut count = 0;
        for m in crate::db::embedded_migrations() {
            let version = i64::from(m.version());
            if let Some(checksum) = done.get(&version) {
                if *checksum != m.checksum().to_string() {
                    return Err(StoreError::DataApi {
                        message: format!(
                            "migration V{version} {} differs from the one applied",
                            m.name()
                        ),
                        unavailable: false,
                    });
                }
                continue;
            }
            for statement in crate::db::split_statements(m.sql().unwrap_or_default()) {
                self.exec(&statement, vec![], t).await?;
            }
            let applied_on = OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            self.exec(
                "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
                 VALUES (CAST(:version AS int4), :name, :applied_on, :checksum)",
                vec![
                    long("version", version),
                    text("name", m.name()),
                    text("applied_on", &applied_on),
                    text("checksum", &m.checksum().to_string()),
                ],
                t,
            )
            .await?;
            count += 1;
        }
        self.ensure_search_config(tx, search_config).await?;
        Ok(count)
    }

    async fn ensure_search_config(&self, tx: &str, config: &str) -> Result<(), StoreError> {
        let t = Some(tx);
        let out = self.exec(crate::db::SEARCH_EXPR_SQL, vec![], t).await?;
        let Some(record) = out.records().first() else {
            return Ok(());
        };
        if crate::db::search_config_matches(&string_at(record, 0, "search")?, config) {
            return Ok(());
        }
        let out = self
            .exec(
                "SELECT cfgname::text FROM pg_ts_config WHERE cfgname = CAST(:config AS name)",
                vec![text("config", config)],
                t,
            )
            .await?;
        let Some(record) = out.records().first() else {
            return Err(StoreError::UnknownSearchConfig(config.to_owned()));
        };
        let name = string_at(record, 0, "cfgname")?;
        tracing::warn!(config = %name, "rebuilding the search column for a new text search configuration");
        for statement in crate::db::search_column_ddl(&name) {
            self.exec(&statement, vec![], t).await?;
        }
        Ok(())
    }
}

/// How many characters of each text column a query returning up to `rows` rows reads at first.
fn text_chars(rows: i64) -> i64 {
    (TEXT_BUDGET_CHARS / (2 * rows.max(1))).max(1)
}

/// The pool's search SQL with named, explicitly typed parameters and text-typed columns.
fn data_api_search(sql: &str) -> String {
    let names = [
        "CAST(:q AS text)".to_owned(),
        utc_param("from_ts"),
        utc_param("to_ts"),
        "CAST(:candidates AS int8)".to_owned(),
        "CAST(:limit AS int8)".to_owned(),
        "CAST(:offset AS int8)".to_owned(),
        "CAST(:owner AS text)".to_owned(),
        "CAST(:window AS int8)".to_owned(),
    ];
    let mut out = String::with_capacity(sql.len() + 512);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' {
            let mut digits = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                digits.push(*d);
                chars.next();
            }
            match digits.parse::<usize>().ok().and_then(|n| names.get(n - 1)) {
                Some(name) => out.push_str(name),
                None => {
                    out.push('$');
                    out.push_str(&digits);
                }
            }
        } else {
            out.push(c);
        }
    }
    out.replace(super::pg::SEARCH_COLUMNS, &columns("c."))
}

fn sdk_error<E, R>(e: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let message = match &e {
        SdkError::ServiceError(s) => format!(
            "{}: {}",
            s.err().code().unwrap_or("unknown error"),
            s.err().message().unwrap_or_default()
        ),
        other => DisplayErrorContext(other).to_string(),
    };
    let unavailable = match &e {
        SdkError::ServiceError(s) => matches!(
            s.err().code(),
            Some(
                "DatabaseUnavailableException"
                    | "DatabaseResumingException"
                    | "ServiceUnavailableError"
                    | "InternalServerErrorException"
                    | "StatementTimeoutException"
                    | "ThrottlingException"
            )
        ),
        // The request never got an answer: connection, timeout, unreadable response.
        _ => true,
    };
    StoreError::DataApi {
        message,
        unavailable,
    }
}

// Parameters.

fn param(name: &str, value: Field, hint: Option<TypeHint>) -> SqlParameter {
    SqlParameter::builder()
        .name(name)
        .value(value)
        .set_type_hint(hint)
        .build()
}

fn text(name: &str, v: &str) -> SqlParameter {
    param(name, Field::StringValue(v.to_owned()), None)
}

fn long(name: &str, v: i64) -> SqlParameter {
    param(name, Field::LongValue(v), None)
}

fn opt_int(name: &str, v: Option<i32>) -> SqlParameter {
    match v {
        Some(v) => long(name, i64::from(v)),
        None => param(name, Field::IsNull(true), None),
    }
}

fn opt_text(name: &str, v: Option<&str>) -> SqlParameter {
    match v {
        Some(v) => text(name, v),
        None => param(name, Field::IsNull(true), None),
    }
}

fn uuid(name: &str, v: Uuid) -> SqlParameter {
    param(
        name,
        Field::StringValue(v.hyphenated().to_string()),
        Some(TypeHint::Uuid),
    )
}

/// A timestamp as the Data API takes it: `YYYY-MM-DD HH:MM:SS.ffffff`, in UTC.
fn timestamp(name: &str, v: OffsetDateTime) -> SqlParameter {
    let fmt =
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:6]");
    let utc = v.to_offset(time::UtcOffset::UTC);
    param(
        name,
        Field::StringValue(utc.format(&fmt).unwrap_or_default()),
        Some(TypeHint::Timestamp),
    )
}

fn opt_timestamp(name: &str, v: Option<OffsetDateTime>) -> SqlParameter {
    match v {
        Some(v) => timestamp(name, v),
        None => param(name, Field::IsNull(true), Some(TypeHint::Timestamp)),
    }
}

fn json(name: &str, v: &serde_json::Value) -> SqlParameter {
    param(
        name,
        Field::StringValue(v.to_string()),
        Some(TypeHint::Json),
    )
}

fn blob(name: &str, v: &[u8]) -> SqlParameter {
    param(
        name,
        Field::BlobValue(aws_sdk_rdsdata::primitives::Blob::new(v)),
        None,
    )
}

// Results.

fn field<'a>(r: &'a [Field], i: usize, column: &'static str) -> Result<&'a Field, StoreError> {
    r.get(i).ok_or(StoreError::Decode { column })
}

fn is_null(f: &Field) -> bool {
    matches!(f, Field::IsNull(true))
}

fn string_at(r: &[Field], i: usize, column: &'static str) -> Result<String, StoreError> {
    match field(r, i, column)? {
        Field::StringValue(s) => Ok(s.clone()),
        _ => Err(StoreError::Decode { column }),
    }
}

fn opt_string_at(
    r: &[Field],
    i: usize,
    column: &'static str,
) -> Result<Option<String>, StoreError> {
    let f = field(r, i, column)?;
    if is_null(f) {
        return Ok(None);
    }
    string_at(r, i, column).map(Some)
}

fn long_at(r: &[Field], i: usize, column: &'static str) -> Result<i64, StoreError> {
    match field(r, i, column)? {
        Field::LongValue(v) => Ok(*v),
        _ => Err(StoreError::Decode { column }),
    }
}

fn opt_int_at(r: &[Field], i: usize, column: &'static str) -> Result<Option<i32>, StoreError> {
    let f = field(r, i, column)?;
    if is_null(f) {
        return Ok(None);
    }
    let v = long_at(r, i, column)?;
    i32::try_from(v)
        .map(Some)
        .map_err(|_| StoreError::Decode { column })
}

fn timestamp_at(r: &[Field], i: usize, column: &'static str) -> Result<OffsetDateTime, StoreError> {
    let fmt = format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond]");
    let s = string_at(r, i, column)?;
    time::PrimitiveDateTime::parse(&s, &fmt)
        .map(time::PrimitiveDateTime::assume_utc)
        .map_err(|_| StoreError::Decode { column })
}

/// A conversation from the first 16 [`columns`] (text as far as its prefix goes).
fn decode(r: &[Field]) -> Result<Conversation, StoreError> {
    let status = string_at(r, 4, "status")?;
    Ok(Conversation {
        id: Uuid::try_parse(&string_at(r, 0, "id")?)
            .map_err(|_| StoreError::Decode { column: "id" })?,
        owner: string_at(r, 1, "owner")?,
        prompt: string_at(r, 2, "prompt")?,
        response: string_at(r, 3, "response")?,
        status: Status::parse(&status).ok_or(StoreError::Decode { column: "status" })?,
        error: opt_string_at(r, 5, "error")?,
        provider: string_at(r, 6, "provider")?,
        model: string_at(r, 7, "model")?,
        prompt_tokens: opt_int_at(r, 8, "prompt_tokens")?,
        completion_tokens: opt_int_at(r, 9, "completion_tokens")?,
        total_tokens: opt_int_at(r, 10, "total_tokens")?,
        flags: serde_json::from_str(&string_at(r, 11, "flags")?)
            .map_err(|_| StoreError::Decode { column: "flags" })?,
        ttfb_ms: opt_int_at(r, 12, "ttfb_ms")?,
        duration_ms: opt_int_at(r, 13, "duration_ms")?,
        created_at: timestamp_at(r, 14, "created_at")?,
        updated_at: timestamp_at(r, 15, "updated_at")?,
    })
}

#[async_trait]
impl ConversationCreate for DataApiStore {
    async fn create(&self, c: &Conversation) -> Result<(), StoreError> {
        let c = &*c.storable();
        let sql = format!(
            "INSERT INTO conversations (id, prompt, response, status, provider, model, \
             created_at, updated_at, owner) VALUES (CAST(:id AS uuid), :prompt, :response, \
             :status, :provider, :model, {}, {}, :owner) ON CONFLICT (id) DO NOTHING",
            utc_param("created_at"),
            utc_param("updated_at"),
        );
        let params = vec![
            uuid("id", c.id),
            text("prompt", &c.prompt),
            text("response", &c.response),
            text("status", c.status.as_str()),
            text("provider", &c.provider),
            text("model", &c.model),
            timestamp("created_at", c.created_at),
            timestamp("updated_at", c.updated_at),
            text("owner", &c.owner),
        ];
        self.exec(&sql, params, None).await?;
        Ok(())
    }
}

#[async_trait]
impl ConversationFinish for DataApiStore {
    async fn checkpoint(&self, id: Uuid, response: &str) -> Result<(), StoreError> {
        let response = &*crate::domain::storable(response);
        self.exec(
            "UPDATE conversations SET response = :response, updated_at = now() \
             WHERE id = CAST(:id AS uuid) AND status = 'streaming'",
            vec![uuid("id", id), text("response", response)],
            None,
        )
        .await?;
        Ok(())
    }

    async fn finish(&self, c: &Conversation) -> Result<(), StoreError> {
        let c = &*c.storable();
        let sql = format!(
            "INSERT INTO conversations (id, prompt, response, status, error, provider, model, \
             prompt_tokens, completion_tokens, total_tokens, ttfb_ms, duration_ms, created_at, \
             updated_at, owner, flags) VALUES (CAST(:id AS uuid), :prompt, :response, :status, \
             CAST(:error AS text), :provider, :model, CAST(:prompt_tokens AS int4), \
             CAST(:completion_tokens AS int4), CAST(:total_tokens AS int4), \
             CAST(:ttfb_ms AS int4), CAST(:duration_ms AS int4), {}, {}, :owner, \
             CAST(:flags AS jsonb)) {}",
            utc_param("created_at"),
            utc_param("updated_at"),
            super::FINISH_ON_CONFLICT,
        );
        let params = vec![
            uuid("id", c.id),
            text("prompt", &c.prompt),
            text("response", &c.response),
            text("status", c.status.as_str()),
            opt_text("error", c.error.as_deref()),
            text("provider", &c.provider),
            text("model", &c.model),
            opt_int("prompt_tokens", c.prompt_tokens),
            opt_int("completion_tokens", c.completion_tokens),
            opt_int("total_tokens", c.total_tokens),
            opt_int("ttfb_ms", c.ttfb_ms),
            opt_int("duration_ms", c.duration_ms),
            timestamp("created_at", c.created_at),
            timestamp("updated_at", c.updated_at),
            text("owner", &c.owner),
            json("flags", &serde_json::to_value(&c.flags).unwrap_or_default()),
        ];
        self.exec(&sql, params, None).await?;
        Ok(())
    }
}

#[async_trait]
impl ConversationGet for DataApiStore {
    async fn get(&self, owner: &str, id: Uuid) -> Result<Option<Conversation>, StoreError> {
        let sql = format!(
            "SELECT {} FROM conversations WHERE id = CAST(:id AS uuid) AND owner = :owner",
            columns("")
        );
        let records = self
            .records(&sql, vec![uuid("id", id), text("owner", owner)], 1)
            .await?;
        let rows = self.conversations(records, |_| Ok(())).await?;
        Ok(rows.into_iter().next().map(|(c, _)| c))
    }
}

#[async_trait]
impl ConversationList for DataApiStore {
    async fn list(&self, owner: &str, page: &PageQuery) -> Result<Vec<Conversation>, StoreError> {
        let mut params = vec![
            text("owner", owner),
            long("limit", page.limit),
            long("offset", page.offset),
        ];
        let keyset = match &page.after {
            None => String::new(),
            Some(cursor) => {
                params.push(timestamp("after_ts", cursor.created_at));
                params.push(uuid("after_id", cursor.id));
                format!(
                    "AND (created_at, id) < ({}, CAST(:after_id AS uuid))",
                    utc_param("after_ts")
                )
            }
        };
        let sql = format!(
            "SELECT {} FROM conversations WHERE owner = :owner {keyset} \
             ORDER BY created_at DESC, id DESC LIMIT CAST(:limit AS int8) \
             OFFSET CAST(:offset AS int8)",
            columns("")
        );
        let records = self.records(&sql, params, page.limit).await?;
        let rows = self.conversations(records, |_| Ok(())).await?;
        Ok(rows.into_iter().map(|(c, _)| c).collect())
    }
}

#[async_trait]
impl ConversationSearch for DataApiStore {
    async fn search(&self, owner: &str, query: &SearchQuery) -> Result<Vec<SearchHit>, StoreError> {
        let params = vec![
            text("q", &query.text),
            opt_timestamp("from_ts", query.from),
            opt_timestamp("to_ts", query.to),
            long("candidates", query.candidates),
            long("limit", query.limit),
            long("offset", query.offset),
            text("owner", owner),
        ];
        if query.text.contains('"') {
            let mut windowed = params.clone();
            windowed.push(long("window", super::pg::PHRASE_WINDOW_ROWS));
            let records = self
                .records(&self.search_window_sql, windowed, query.limit)
                .await?;
            let found = records
                .first()
                .map(|r| long_at(r, 20, "found"))
                .transpose()?;
            // Long text is completed only for the answer that is kept.
            if found == Some(query.candidates) {
                return self.hits(records).await;
            }
        }
        let records = self.records(&self.search_sql, params, query.limit).await?;
        self.hits(records).await
    }
}

impl DataApiStore {
    /// Search records as hits: the conversation, then its rank and snippet.
    async fn hits(&self, records: Vec<Vec<Field>>) -> Result<Vec<SearchHit>, StoreError> {
        let rows = self
            .conversations(records, |r| {
                let rank = match field(r, 18, "rank")? {
                    Field::DoubleValue(v) => *v as f32,
                    _ => return Err(StoreError::Decode { column: "rank" }),
                };
                Ok((rank, string_at(r, 19, "snippet")?))
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(conversation, (rank, snippet))| SearchHit {
                conversation,
                rank,
                snippet,
            })
            .collect())
    }
}

#[async_trait]
impl ApiKeys for DataApiStore {
    async fn owner_of(&self, digest: &[u8]) -> Result<Option<String>, StoreError> {
        let out = self
            .exec(
                "SELECT owner FROM api_keys WHERE digest = :digest AND revoked_at IS NULL",
                vec![blob("digest", digest)],
                None,
            )
            .await?;
        out.records()
            .first()
            .map(|r| string_at(r, 0, "owner"))
            .transpose()
    }

    async fn add_key(
        &self,
        id: Uuid,
        owner: &str,
        name: &str,
        digest: &[u8],
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO api_keys (id, owner, name, digest) \
             VALUES (CAST(:id AS uuid), :owner, :name, :digest)",
            vec![
                uuid("id", id),
                text("owner", owner),
                text("name", name),
                blob("digest", digest),
            ],
            None,
        )
        .await?;
        Ok(())
    }

    async fn revoke_key(&self, id: Uuid) -> Result<bool, StoreError> {
        // RETURNING, not numberOfRecordsUpdated: the answer is in the rows either way.
        let out = self
            .exec(
                "UPDATE api_keys SET revoked_at = now() \
                 WHERE id = CAST(:id AS uuid) AND revoked_at IS NULL RETURNING 1",
                vec![uuid("id", id)],
                None,
            )
            .await?;
        Ok(out.records().len() == 1)
    }
}

#[async_trait]
impl HealthCheck for DataApiStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.exec("SELECT 1", vec![], None).await?;
        Ok(())
    }
}

#[async_trait]
impl Migrate for DataApiStore {
    /// One transaction: the migration lock, then each pending file one statement per call,
    /// recorded in refinery's history table (so the pool and the Data API share one history).
    async fn migrate(&self, search_config: &str) -> Result<usize, StoreError> {
        let tx = self.begin().await?;
        match self.migrate_in(&tx, search_config).await {
            Ok(n) => {
                self.end(&tx, true).await?;
                Ok(n)
            }
            Err(e) => {
                if let Err(rollback) = self.end(&tx, false).await {
                    tracing::warn!(error = %rollback, "rolling back the migration failed");
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_sql_has_only_named_parameters() {
        for sql in [
            data_api_search(&super::super::search_sql("english")),
            data_api_search(&super::super::search_window_sql("simple")),
        ] {
            assert!(!sql.contains('$'), "{sql}");
            assert!(sql.contains("CAST(:owner AS text)"), "{sql}");
            assert!(sql.contains("char_length(c.response)"), "{sql}");
        }
    }

    #[test]
    fn timestamps_round_trip_in_utc_with_microseconds() {
        let t = time::macros::datetime!(2026-11-25 10:20:30.123456 +02:00);
        let p = timestamp("t", t);
        let Some(Field::StringValue(s)) = p.value() else {
            panic!("{p:?}");
        };
        assert_eq!(s, "2026-11-25 08:20:30.123456");
        let back = timestamp_at(&[Field::StringValue(s.clone())], 0, "t").unwrap();
        assert_eq!(back, t);
        let whole = timestamp_at(
            &[Field::StringValue("2026-11-25 08:20:30.5".into())],
            0,
            "t",
        );
        assert!(whole.is_ok());
    }

    #[test]
    fn text_budget_splits_over_rows() {
        assert_eq!(text_chars(1), 60_000);
        assert_eq!(text_chars(100), 600);
    }
}
