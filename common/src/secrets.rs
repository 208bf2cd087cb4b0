//! Secrets read at cold start: for each setting that may hold a secret (`DATABASE_URL`,
//! `AUTH_TOKEN`, `OPENAI_API_KEY`), a `<NAME>_SECRET_ARN` names an AWS Secrets Manager secret
//! whose `SecretString` is the value. The deployment then holds ARNs, never secrets, in the
//! function's configuration (where anyone allowed to read the function would see them). The
//! client is built, and Secrets Manager called, only when such an ARN is set: one call per
//! secret, once per process.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_secretsmanager::error::DisplayErrorContext;

use crate::settings::{Env, SettingsError, aws_credentials};

/// The settings a secret may fill, and the variable naming its secret.
pub const FROM_SECRETS: [(&str, &str); 3] = [
    ("DATABASE_URL", "DATABASE_URL_SECRET_ARN"),
    ("AUTH_TOKEN", "AUTH_TOKEN_SECRET_ARN"),
    ("OPENAI_API_KEY", "OPENAI_API_KEY_SECRET_ARN"),
];

/// An environment with the secrets' values over `base` (a variable set in `base` itself wins
/// over its secret).
pub struct WithSecrets<'a> {
    base: &'a dyn Env,
    values: HashMap<&'static str, String>,
}

impl Env for WithSecrets<'_> {
    fn var(&self, name: &str) -> Option<String> {
        self.base
            .var(name)
            .or_else(|| self.values.get(name).cloned())
    }
}

/// `base`, with the value of every secret a `<NAME>_SECRET_ARN` of it names and `<NAME>` is not
/// set. A secret that cannot be read stops the process at start, naming the variable.
pub async fn resolve(base: &dyn Env) -> Result<WithSecrets<'_>, SettingsError> {
    let wanted: Vec<(&'static str, &'static str, String)> = FROM_SECRETS
        .iter()
        .filter(|(name, _)| base.var(name).is_none())
        .filter_map(|(name, arn_var)| base.var(arn_var).map(|arn| (*name, *arn_var, arn)))
        .collect();
    let mut values = HashMap::new();
    if let Some((_, _, first)) = wanted.first() {
        let client = client(base, first)?;
        for (name, arn_var, arn) in wanted {
            let value = client
                .get_secret_value()
                .secret_id(&arn)
                .send()
                .await
                .map_err(|e| SettingsError::Invalid {
                    name: arn_var,
                    value: arn.clone(),
                    reason: format!("the secret could not be read: {}", DisplayErrorContext(&e)),
                })?
                .secret_string
                .ok_or_else(|| SettingsError::Invalid {
                    name: arn_var,
                    value: arn.clone(),
                    reason: "the secret has no SecretString".into(),
                })?;
            values.insert(name, value.trim().to_owned());
        }
    }
    Ok(WithSecrets { base, values })
}

/// The logins migration V9's roles get, each named by the variable holding its secret (RDS's
/// shape, `{"username", "password"}`, which the Data API also connects with), and the roles it
/// joins.
pub const LOGINS: [(&str, &str); 3] = [
    ("DB_READER_SECRET_ARN", "llm_stream_reader"),
    (
        "DB_HISTORY_SECRET_ARN",
        "llm_stream_reader,llm_stream_thread_deleter",
    ),
    ("DB_WRITER_SECRET_ARN", "llm_stream_writer"),
];

/// After migrating: makes each login `LOGINS` names in `env` (its user and password from its
/// secret) a member of its roles, so the functions can connect as the least they need. Returns
/// how many it made.
pub async fn ensure_logins(
    env: &dyn Env,
    store: &dyn crate::store::Migrate,
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    let mut made = 0;
    let mut client = None;
    for (arn_var, groups) in LOGINS {
        let Some(arn) = env.var(arn_var) else {
            continue;
        };
        let client = match &client {
            Some(c) => c,
            None => client.insert(self::client(env, &arn)?),
        };
        let value = client
            .get_secret_value()
            .secret_id(&arn)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "{arn_var}: the secret could not be read: {}",
                    DisplayErrorContext(&e)
                )
            })?
            .secret_string
            .ok_or_else(|| format!("{arn_var}: the secret has no SecretString"))?;
        let login: serde_json::Value = serde_json::from_str(&value)
            .map_err(|_| format!("{arn_var}: the secret is not {{\"username\", \"password\"}}"))?;
        let (Some(user), Some(password)) = (login["username"].as_str(), login["password"].as_str())
        else {
            return Err(format!("{arn_var}: the secret lacks username or password").into());
        };
        store.ensure_login(user, password, groups).await?;
        tracing::info!(login = user, roles = groups, "login ready");
        made += 1;
    }
    Ok(made)
}

/// A Secrets Manager client: the credentials Lambda sets, the region of `AWS_REGION` (else the
/// one in `arn`), and `AWS_ENDPOINT_URL_SECRETS_MANAGER` (or `AWS_ENDPOINT_URL`) when set.
fn client(env: &dyn Env, arn: &str) -> Result<aws_sdk_secretsmanager::Client, SettingsError> {
    let creds = aws_credentials(
        env,
        "AWS credentials to read the secrets the *_SECRET_ARN name",
    )?;
    let region = env
        .var("AWS_REGION")
        .or_else(|| env.var("AWS_DEFAULT_REGION"))
        .or_else(|| arn.split(':').nth(3).map(str::to_owned))
        .unwrap_or_default();
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region))
        .credentials_provider(Credentials::new(
            creds.access_key_id,
            creds.secret_access_key.expose(),
            creds.session_token.map(|t| t.expose().to_owned()),
            None,
            "environment",
        ))
        .http_client(http)
        .timeout_config(
            aws_sdk_secretsmanager::config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_timeout(Duration::from_secs(10))
                .build(),
        );
    if let Some(url) = env
        .var("AWS_ENDPOINT_URL_SECRETS_MANAGER")
        .or_else(|| env.var("AWS_ENDPOINT_URL"))
    {
        config = config.endpoint_url(url);
    }
    Ok(aws_sdk_secretsmanager::Client::from_conf(config.build()))
}
