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

mod conversations;
mod fields;
mod log;
mod migrate;
mod params;
mod read;
mod threads;

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_rdsdata::Client;
use aws_sdk_rdsdata::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_rdsdata::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_rdsdata::types::SqlParameter;

use super::HealthCheck;
use crate::error::StoreError;
use crate::settings::{DataApiSettings, SettingsError};

pub use read::{PIECE_CHARS, TEXT_BUDGET_BYTES};

#[derive(Clone)]
pub struct DataApiStore {
    client: Client,
    cluster_arn: String,
    secret_arn: String,
    database: String,
    stale_after: Duration,
    heartbeat_stale: Duration,
    search_sql: String,
    search_window_sql: String,
}

/// Attempts per Data API call: one retry of a throttled or failed call, within the call's bound.
pub const MAX_ATTEMPTS: u32 = 2;

/// The bound of one migration statement: a migration may rewrite a large table.
const MIGRATION_CALL_TIMEOUT: Duration = Duration::from_secs(300);

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
            // Every call is bounded as a whole, retries included, and retried at most once:
            // the SDK's defaults (three attempts, no operation bound) could hold a request for
            // longer than its Lambda has.
            .timeout_config(
                aws_sdk_rdsdata::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(connect_timeout)
                    .operation_timeout(call_timeout)
                    .operation_attempt_timeout(call_timeout)
                    .build(),
            )
            .retry_config(
                aws_sdk_rdsdata::config::retry::RetryConfig::standard()
                    .with_max_attempts(MAX_ATTEMPTS),
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
            heartbeat_stale: super::HEARTBEAT_STALE_DEFAULT,
            search_sql: conversations::data_api_search(search_config, false),
            search_window_sql: conversations::data_api_search(search_config, true),
        }
    }

    /// The store the functions use in Data API mode: credentials from `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`, as Lambda sets them.
    pub fn from_settings(
        settings: &crate::Settings,
        target: &DataApiSettings,
        env: &dyn crate::settings::Env,
    ) -> Result<Self, SettingsError> {
        let env_credentials = crate::settings::aws_credentials(
            env,
            "AWS credentials for the Data API (Lambda sets them; locally: \
             eval \"$(aws configure export-credentials --format env)\")",
        )?;
        let credentials = Credentials::new(
            env_credentials.access_key_id,
            env_credentials.secret_access_key.expose(),
            env_credentials.session_token.map(|t| t.expose().to_owned()),
            None,
            "environment",
        );
        Ok(Self::new(
            target,
            credentials,
            settings.db.connect_timeout,
            settings.db.call_timeout(),
            super::stale_after(settings),
            &settings.db.search_config,
        )
        .with_heartbeat_stale(super::heartbeat_stale(settings)))
    }

    /// A `streaming` turn not heard from for this long reads as interrupted.
    pub fn with_heartbeat_stale(mut self, quiet: Duration) -> Self {
        self.heartbeat_stale = quiet;
        self
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
            // Migrations (the only transactions) may run long statements: the Data API cuts a
            // call at 45 s unless told to let the statement go on.
            .continue_after_timeout(transaction.is_some())
            .customize()
            .config_override(migration_override(transaction.is_some()))
            .send()
            .await
            .map_err(sdk_error)
    }
}

/// Inside a transaction (only migrations open one) a statement may run up to
/// [`MIGRATION_CALL_TIMEOUT`]; other calls keep the client's bound.
fn migration_override(in_transaction: bool) -> aws_sdk_rdsdata::config::Builder {
    let builder = aws_sdk_rdsdata::config::Builder::default();
    if !in_transaction {
        return builder;
    }
    builder.timeout_config(
        aws_sdk_rdsdata::config::timeout::TimeoutConfig::builder()
            .operation_timeout(MIGRATION_CALL_TIMEOUT)
            .operation_attempt_timeout(MIGRATION_CALL_TIMEOUT)
            .build(),
    )
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

#[async_trait]
impl super::keys::TextRows for DataApiStore {
    async fn text_rows(
        &self,
        sql: &str,
        params: &[Option<String>],
    ) -> Result<Vec<super::keys::TextRow>, StoreError> {
        let args = params
            .iter()
            .fold(params::Args::default(), |a, p| a.opt_text(p.as_deref()));
        let out = self.exec(&params::named(sql), args.0, None).await?;
        out.records()
            .iter()
            .map(|r| {
                r.iter()
                    .map(|f| match f {
                        aws_sdk_rdsdata::types::Field::IsNull(_) => Ok(None),
                        aws_sdk_rdsdata::types::Field::StringValue(s) => Ok(Some(s.clone())),
                        _ => Err(StoreError::Decode { column: "text" }),
                    })
                    .collect()
            })
            .collect()
    }
}

#[async_trait]
impl HealthCheck for DataApiStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.exec("SELECT 1", vec![], None).await?;
        Ok(())
    }
}
