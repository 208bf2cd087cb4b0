//! Typed settings, read once from the environment at start.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

mod provider;
mod routes;

pub use provider::{
    AwsCredentials, BedrockSettings, ProviderKind, ProviderSettings, aws_credentials,
};
pub use routes::{Route, RoutedProvider, Routes, Target};

/// A setting that was missing or could not be parsed; names the variable.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("environment variable {name} is required: {hint}")]
    Missing {
        name: &'static str,
        hint: &'static str,
    },
    #[error("environment variable {name} has an invalid value {value:?}: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
    /// `LLM_CONFIG` does not hold a valid configuration.
    #[error("LLM_CONFIG: {0}")]
    Config(String),
}

/// A string that must not appear in logs or debug output.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where the environment comes from: the process, or a map in tests.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
}

impl Env for HashMap<&str, &str> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).map(|v| (*v).to_owned())
    }
}

/// Where the database is: a connection URL, or an Aurora cluster through the RDS Data API.
#[derive(Debug, Clone)]
pub enum DbTarget {
    /// `DATABASE_URL`: a libpq-style URL; `sslmode=require` turns TLS on.
    Url(Secret),
    /// `DB_CLUSTER_ARN`, `DB_SECRET_ARN`, `DB_NAME`: the RDS Data API (HTTPS, no connection,
    /// no VPC).
    DataApi(DataApiSettings),
}

/// The RDS Data API target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataApiSettings {
    /// `DB_CLUSTER_ARN`: the Aurora cluster (with the Data API enabled).
    pub cluster_arn: String,
    /// `DB_SECRET_ARN`: the Secrets Manager secret holding the database credentials.
    pub secret_arn: String,
    /// `DB_NAME`: the database in the cluster (default `postgres`).
    pub database: String,
    /// `AWS_REGION` (or `AWS_DEFAULT_REGION`); default: the region in `DB_CLUSTER_ARN`.
    pub region: String,
    /// `AWS_ENDPOINT_URL_RDS_DATA` (or `AWS_ENDPOINT_URL`): another Data API endpoint, such as
    /// a local one in tests.
    pub endpoint_url: Option<String>,
}

/// What the client adds to `DB_STATEMENT_TIMEOUT_MS` for one whole database call (getting a
/// connection included): the server's own timeout fires first when the server still answers.
pub const CALL_MARGIN: Duration = Duration::from_millis(500);

/// Database connection settings.
#[derive(Debug, Clone)]
pub struct DbSettings {
    /// Which database, and how to reach it.
    pub target: DbTarget,
    /// `DB_POOL_SIZE`: connections per process (default 8; Lambda uses 1 or 2).
    pub pool_size: usize,
    /// `DB_CONNECT_TIMEOUT_MS`: time to open one connection (default 3000).
    pub connect_timeout: Duration,
    /// `DB_STATEMENT_TIMEOUT_MS`: the statement timeout (default 5000). The server enforces it
    /// on pooled connections; the client bounds every call by it plus [`CALL_MARGIN`], so a
    /// database that goes silent (no answer, no reset) cannot hang a request.
    pub statement_timeout: Duration,
    /// `DB_SAVE_BUDGET_MS`: how long a stream may spend saving its final record, every retry
    /// included, before it logs the record as `unsaved_record` instead (default 30000).
    pub save_budget: Duration,
    /// `HEALTH_CACHE_MS`: `/health` queries the database at most once per this interval per
    /// process (default 5000; failures are cached for at most a second).
    pub health_cache: Duration,
    /// `SEARCH_CONFIG`: the PostgreSQL text search configuration (default `english`).
    pub search_config: String,
    /// `SEARCH_CANDIDATES`: how many of the newest matches a search ranks (default 1000).
    pub search_candidates: i64,
    /// `RETENTION_DAYS`: threads whose latest turn is older are purged (daily, and by `local
    /// purge`); unset keeps everything.
    pub retention_days: Option<u32>,
}

/// Limits of the `/stream` endpoint.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// `MAX_PROMPT_CHARS` (default 32000).
    pub max_prompt_chars: usize,
    /// `MAX_BODY_BYTES` (default 262144): larger bodies get 413.
    pub max_body_bytes: usize,
    /// `CHECKPOINT_INTERVAL_MS` (default 2000).
    pub checkpoint_interval: Duration,
    /// `KEEPALIVE_INTERVAL_MS` (default 15000).
    pub keepalive_interval: Duration,
    /// `LOG_CONTENT`: put prompts and responses in the log lines (default false).
    pub log_content: bool,
    /// `GUARDRAIL_DENY_PATTERNS`: a JSON array of regular expressions refused in prompts and
    /// answers (case-insensitive).
    pub deny_patterns: Vec<String>,
    /// `GUARDRAIL_MAX_RESPONSE_CHARS` (default 200000): longer answers are stopped.
    pub max_response_chars: usize,
    /// `PII_REDACTION`: redact e-mails, card numbers and phone numbers in what is stored.
    pub pii_redaction: bool,
    /// `GROUNDING_CHECK`: ask the provider whether each complete answer is supported by its
    /// prompt, and store the verdict as a flag.
    pub grounding_check: bool,
    /// `MAX_CLIENT_LAG_BYTES`: a client that falls this far behind the answer (bytes of events
    /// produced but not yet taken by its connection) is dropped (default 1 MiB); the answer is
    /// still generated and saved.
    pub max_client_lag_bytes: usize,
    /// `RESUME_POLL_MS`: how often a client re-attached in another process than the one
    /// generating the turn reads the turn's log (default 250).
    pub resume_poll: Duration,
    /// `MAX_CONTEXT_CHARS`: what a continued turn sends at most (system message, previous
    /// turns, new prompt, in characters); older turns are dropped first (default 200000).
    pub max_context_chars: usize,
    /// `SHUTDOWN_GRACE_MS`: on SIGTERM or Ctrl-C, how long running answers may go on before
    /// they are stopped and saved as they are, with error `shutdown` (default 8000).
    pub shutdown_grace: Duration,
    /// In Lambda: how the function invokes itself to run a background response (`None`
    /// outside Lambda, where a task of the process runs it).
    pub self_invoke: Option<SelfInvoke>,
}

/// What a Lambda function needs to invoke itself asynchronously (a background response): what
/// Lambda puts in every function's environment, `AWS_LAMBDA_FUNCTION_NAME`, `AWS_REGION` and
/// the credentials, and `AWS_ENDPOINT_URL_LAMBDA` (or `AWS_ENDPOINT_URL`) for another Invoke
/// API, such as `cargo lambda watch`'s.
#[derive(Debug, Clone)]
pub struct SelfInvoke {
    pub function_name: String,
    pub region: String,
    /// Default: `https://lambda.{region}.amazonaws.com`.
    pub endpoint_url: String,
    pub credentials: AwsCredentials,
}

/// [`SelfInvoke`] when this process is a Lambda function (`AWS_LAMBDA_RUNTIME_API` is set) whose
/// environment names it whole; else `None` (a background response is then refused in Lambda).
fn self_invoke(env: &dyn Env) -> Option<SelfInvoke> {
    env.var("AWS_LAMBDA_RUNTIME_API")?;
    let region = env
        .var("AWS_REGION")
        .or_else(|| env.var("AWS_DEFAULT_REGION"))?;
    Some(SelfInvoke {
        function_name: env.var("AWS_LAMBDA_FUNCTION_NAME")?,
        endpoint_url: env
            .var("AWS_ENDPOINT_URL_LAMBDA")
            .or_else(|| env.var("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| format!("https://lambda.{region}.amazonaws.com")),
        region,
        credentials: aws_credentials(env, "a background response in Lambda").ok()?,
    })
}

/// `AUTH`: `required` (the default) or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Required,
    Off,
}

/// Authentication settings.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// `AUTH`: `required` (the default) or `off`.
    pub mode: AuthMode,
    /// `AUTH_TOKEN`: one static bearer key, for the simplest setups.
    pub static_token: Option<Secret>,
    /// `AUTH_TOKEN_OWNER`: the owner of `AUTH_TOKEN`'s conversations (default `default`).
    pub static_token_owner: String,
}

/// The playground page (`GET /`).
#[derive(Debug, Clone, Default)]
pub struct PlaygroundSettings {
    /// `PLAYGROUND_STREAM_URL`: where the page sends its streams when they are not served by
    /// the origin that serves the page (in AWS: the stream function's URL). Unset: the page's
    /// own origin.
    pub stream_url: Option<String>,
}

/// Everything a function reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub db: DbSettings,
    pub provider: ProviderSettings,
    pub stream: StreamSettings,
    pub auth: AuthSettings,
    pub playground: PlaygroundSettings,
}

impl DbSettings {
    /// The bound of one whole database call: the statement timeout plus [`CALL_MARGIN`].
    pub fn call_timeout(&self) -> Duration {
        self.statement_timeout + CALL_MARGIN
    }
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_source(&ProcessEnv)
    }

    /// Reads the process environment, with the secrets its `*_SECRET_ARN` variables name read
    /// from Secrets Manager first (see [`crate::secrets`]): what every process does at start.
    pub async fn load() -> Result<Self, SettingsError> {
        Self::from_source(&crate::secrets::resolve(&ProcessEnv).await?)
    }

    /// Reads any environment source; used by tests with a map.
    pub fn from_source(env: &dyn Env) -> Result<Self, SettingsError> {
        Ok(Self {
            db: db_settings(env)?,
            provider: provider::from_env(env)?,
            stream: stream_settings(env)?,
            auth: auth_settings(env)?,
            playground: playground_settings(env)?,
        })
    }
}

/// The database settings.
fn db_settings(env: &dyn Env) -> Result<DbSettings, SettingsError> {
    let db = DbSettings {
        target: db_target(env)?,
        pool_size: parse(env, "DB_POOL_SIZE", 8usize)?,
        connect_timeout: millis(env, "DB_CONNECT_TIMEOUT_MS", 3000)?,
        statement_timeout: millis(env, "DB_STATEMENT_TIMEOUT_MS", 5000)?,
        save_budget: millis(env, "DB_SAVE_BUDGET_MS", 30_000)?,
        health_cache: millis(env, "HEALTH_CACHE_MS", 5000)?,
        search_config: env.var("SEARCH_CONFIG").unwrap_or_else(|| "english".into()),
        search_candidates: parse(env, "SEARCH_CANDIDATES", 1000i64)?,
        retention_days: match env.var("RETENTION_DAYS") {
            Some(raw) if !raw.trim().is_empty() => Some(
                raw.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|d| (1..=3_650_000).contains(d))
                    .ok_or_else(|| {
                        invalid(
                            "RETENTION_DAYS",
                            &raw,
                            "expected a whole number of days, at least 1 (unset: keep forever)",
                        )
                    })?,
            ),
            _ => None,
        },
    };
    if db.search_candidates < 1 {
        return Err(invalid("SEARCH_CANDIDATES", "0", "must be at least 1"));
    }
    if !db
        .search_config
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(invalid(
            "SEARCH_CONFIG",
            &db.search_config,
            "expected a text search configuration name such as english or simple",
        ));
    }
    if db.pool_size == 0 {
        return Err(invalid("DB_POOL_SIZE", "0", "must be at least 1"));
    }
    Ok(db)
}

/// The limits of a stream.
fn stream_settings(env: &dyn Env) -> Result<StreamSettings, SettingsError> {
    Ok(StreamSettings {
        max_prompt_chars: parse(env, "MAX_PROMPT_CHARS", 32_000usize)?,
        max_body_bytes: parse(env, "MAX_BODY_BYTES", 256 * 1024usize)?,
        checkpoint_interval: millis(env, "CHECKPOINT_INTERVAL_MS", 2000)?,
        keepalive_interval: millis(env, "KEEPALIVE_INTERVAL_MS", 15_000)?,
        log_content: parse(env, "LOG_CONTENT", false)?,
        deny_patterns: match env.var("GUARDRAIL_DENY_PATTERNS") {
            None => Vec::new(),
            Some(raw) => serde_json::from_str(&raw).map_err(|e| {
                invalid(
                    "GUARDRAIL_DENY_PATTERNS",
                    &raw,
                    &format!("expected a JSON array of strings ({e})"),
                )
            })?,
        },
        max_response_chars: parse(env, "GUARDRAIL_MAX_RESPONSE_CHARS", 200_000usize)?,
        pii_redaction: parse(env, "PII_REDACTION", false)?,
        grounding_check: parse(env, "GROUNDING_CHECK", false)?,
        max_client_lag_bytes: parse(env, "MAX_CLIENT_LAG_BYTES", 1024 * 1024usize)?,
        max_context_chars: parse(env, "MAX_CONTEXT_CHARS", 200_000usize)?,
        resume_poll: millis(env, "RESUME_POLL_MS", 250)?,
        shutdown_grace: millis(env, "SHUTDOWN_GRACE_MS", 8000)?,
        self_invoke: self_invoke(env),
    })
}

/// Who may call: `AUTH` and the static key.
fn auth_settings(env: &dyn Env) -> Result<AuthSettings, SettingsError> {
    let auth = AuthSettings {
        mode: match env.var("AUTH").as_deref() {
            None | Some("required") => AuthMode::Required,
            Some("off") => AuthMode::Off,
            Some(other) => return Err(invalid("AUTH", other, "expected required or off")),
        },
        static_token: env.var("AUTH_TOKEN").map(Secret::new),
        static_token_owner: env
            .var("AUTH_TOKEN_OWNER")
            .unwrap_or_else(|| "default".into()),
    };
    if auth
        .static_token
        .as_ref()
        .is_some_and(|t| t.expose().len() < 16)
    {
        return Err(invalid(
            "AUTH_TOKEN",
            "<hidden>",
            "must be at least 16 characters",
        ));
    }
    Ok(auth)
}

/// The playground page.
fn playground_settings(env: &dyn Env) -> Result<PlaygroundSettings, SettingsError> {
    Ok(PlaygroundSettings {
        stream_url: match env.var("PLAYGROUND_STREAM_URL") {
            None => None,
            Some(url) => Some(origin_url(&url).ok_or_else(|| {
                invalid(
                    "PLAYGROUND_STREAM_URL",
                    &url,
                    "expected an http:// or https:// URL such as \
                     https://abc.lambda-url.eu-west-1.on.aws/",
                )
            })?),
        },
    })
}

/// `DATABASE_URL` selects the pool; `DB_CLUSTER_ARN` (with `DB_SECRET_ARN`) the Data API.
fn db_target(env: &dyn Env) -> Result<DbTarget, SettingsError> {
    match (env.var("DATABASE_URL"), env.var("DB_CLUSTER_ARN")) {
        (Some(_), Some(_)) => Err(SettingsError::Invalid {
            name: "DB_CLUSTER_ARN",
            value: "<set>".into(),
            reason: "set either DATABASE_URL (a connection) or DB_CLUSTER_ARN (the Data API), \
                     not both"
                .into(),
        }),
        (None, None) => Err(SettingsError::Missing {
            name: "DATABASE_URL",
            hint: "a PostgreSQL URL such as postgres://postgres@127.0.0.1:5432/postgres \
                   (or DB_CLUSTER_ARN and DB_SECRET_ARN for the RDS Data API)",
        }),
        (Some(url), None) => {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(SettingsError::Invalid {
                    name: "DATABASE_URL",
                    value: "<hidden>".into(),
                    reason: "must start with postgres:// or postgresql://".into(),
                });
            }
            Ok(DbTarget::Url(Secret::new(url)))
        }
        (None, Some(cluster_arn)) => {
            let secret_arn = env.var("DB_SECRET_ARN").ok_or(SettingsError::Missing {
                name: "DB_SECRET_ARN",
                hint: "the ARN of the Secrets Manager secret of the database user (Data API mode)",
            })?;
            // arn:aws:rds:REGION:ACCOUNT:cluster:NAME
            let parts: Vec<&str> = cluster_arn.split(':').collect();
            if parts.len() < 7 || parts[0] != "arn" || parts[2] != "rds" {
                return Err(invalid(
                    "DB_CLUSTER_ARN",
                    &cluster_arn,
                    "expected arn:aws:rds:REGION:ACCOUNT:cluster:NAME",
                ));
            }
            let region = env
                .var("AWS_REGION")
                .or_else(|| env.var("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| parts[3].to_owned());
            Ok(DbTarget::DataApi(DataApiSettings {
                cluster_arn,
                secret_arn,
                database: env.var("DB_NAME").unwrap_or_else(|| "postgres".into()),
                region,
                endpoint_url: env
                    .var("AWS_ENDPOINT_URL_RDS_DATA")
                    .or_else(|| env.var("AWS_ENDPOINT_URL")),
            }))
        }
    }
}

/// `url` without its trailing slash, when it is an http(s) URL of a host with nothing a page
/// attribute or a Content-Security-Policy could misread.
fn origin_url(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let host = rest.split('/').next()?;
    let fine = |c: char| c.is_ascii_alphanumeric() || "-._~:/%".contains(c);
    (!host.is_empty() && url.chars().all(fine)).then(|| url.trim_end_matches('/').to_owned())
}

pub(crate) fn invalid(name: &'static str, value: &str, reason: &str) -> SettingsError {
    SettingsError::Invalid {
        name,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

pub(crate) fn parse<T>(env: &dyn Env, name: &'static str, default: T) -> Result<T, SettingsError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    match env.var(name) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse()
            .map_err(|e: T::Err| invalid(name, &raw, &e.to_string())),
    }
}

pub(crate) fn millis(
    env: &dyn Env,
    name: &'static str,
    default: u64,
) -> Result<Duration, SettingsError> {
    parse(env, name, default).map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&'static str, &'static str)]) -> HashMap<&'static str, &'static str> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn missing_database_url_names_the_variable() {
        let err = Settings::from_source(&env(&[])).unwrap_err();
        assert!(err.to_string().contains("DATABASE_URL"), "{err}");
    }

    #[test]
    fn malformed_numbers_name_the_variable_and_value() {
        let e = env(&[("DATABASE_URL", "postgres://x/y"), ("DB_POOL_SIZE", "many")]);
        let err = Settings::from_source(&e).unwrap_err().to_string();
        assert!(
            err.contains("DB_POOL_SIZE") && err.contains("many"),
            "{err}"
        );
    }

    #[test]
    fn retention_is_whole_days_and_unset_keeps_everything() {
        let with = |v: &'static str| {
            Settings::from_source(&env(&[
                ("DATABASE_URL", "postgres://x/y"),
                ("RETENTION_DAYS", v),
            ]))
        };
        assert_eq!(with("90").unwrap().db.retention_days, Some(90));
        assert_eq!(with(" ").unwrap().db.retention_days, None);
        for bad in ["0", "-3", "1.5", "forever"] {
            let err = with(bad).unwrap_err().to_string();
            assert!(err.contains("RETENTION_DAYS") && err.contains(bad), "{err}");
        }
        let unset = Settings::from_source(&env(&[("DATABASE_URL", "postgres://x/y")])).unwrap();
        assert_eq!(unset.db.retention_days, None);
    }

    #[test]
    fn defaults_are_offline_and_sane() {
        let s = Settings::from_source(&env(&[("DATABASE_URL", "postgres://x/y")])).unwrap();
        assert_eq!(s.provider.kind, ProviderKind::Offline);
        assert_eq!(s.stream.checkpoint_interval, Duration::from_secs(2));
        assert_eq!(s.db.pool_size, 8);
    }

    #[test]
    fn cluster_arn_selects_the_data_api() {
        let arn = "arn:aws:rds:eu-west-1:123456789012:cluster:llm";
        let e = env(&[("DB_CLUSTER_ARN", arn), ("DB_SECRET_ARN", "arn:s")]);
        let s = Settings::from_source(&e).unwrap();
        let DbTarget::DataApi(d) = s.db.target else {
            panic!("expected the Data API");
        };
        assert_eq!(
            (
                d.cluster_arn.as_str(),
                d.region.as_str(),
                d.database.as_str()
            ),
            (arn, "eu-west-1", "postgres")
        );
        assert_eq!(d.endpoint_url, None);
        let err = Settings::from_source(&env(&[("DB_CLUSTER_ARN", arn)])).unwrap_err();
        assert!(err.to_string().contains("DB_SECRET_ARN"), "{err}");
        let both = env(&[
            ("DB_CLUSTER_ARN", arn),
            ("DB_SECRET_ARN", "arn:s"),
            ("DATABASE_URL", "postgres://x/y"),
        ]);
        let err = Settings::from_source(&both).unwrap_err();
        assert!(err.to_string().contains("not both"), "{err}");
        let bad = env(&[("DB_CLUSTER_ARN", "my-cluster"), ("DB_SECRET_ARN", "arn:s")]);
        assert!(Settings::from_source(&bad).is_err());
    }

    #[test]
    fn the_playground_stream_url_is_an_http_url() {
        let with = |url| {
            Settings::from_source(&env(&[
                ("DATABASE_URL", "postgres://x/y"),
                ("PLAYGROUND_STREAM_URL", url),
            ]))
        };
        let s = with("https://abc.lambda-url.eu-west-1.on.aws/").unwrap();
        assert_eq!(
            s.playground.stream_url.as_deref(),
            Some("https://abc.lambda-url.eu-west-1.on.aws")
        );
        for bad in [
            "abc.example",
            "javascript:alert(1)",
            "https://",
            "https://a\"b",
        ] {
            let err = with(bad).unwrap_err().to_string();
            assert!(err.contains("PLAYGROUND_STREAM_URL"), "{bad}: {err}");
        }
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }
}
