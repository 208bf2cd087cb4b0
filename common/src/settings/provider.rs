//! Which LLM provider answers, and how to reach it.

use std::time::Duration;

use super::{Env, Secret, SettingsError, invalid, millis, parse};

/// Which LLM provider serves `/stream`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    Offline,
    OpenAi,
    Bedrock,
}

/// Provider and stream settings.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// `LLM_PROVIDER`: `offline` (default), `openai` or `bedrock`.
    pub kind: ProviderKind,
    /// `OPENAI_BASE_URL`: default `https://api.openai.com/v1`.
    pub openai_base_url: String,
    /// `OPENAI_API_KEY`: required with `openai` against the OpenAI API; optional for local servers.
    pub openai_api_key: Option<Secret>,
    /// `LLM_MODEL`: the default model name (with `bedrock`, `BEDROCK_MODEL_ID`).
    pub model: String,
    /// With `LLM_PROVIDER=bedrock`: the region, endpoint and credentials.
    pub bedrock: Option<BedrockSettings>,
    /// `OFFLINE_CHUNK_DELAY_MS`: delay between offline chunks (default 20).
    pub offline_chunk_delay: Duration,
    /// `LLM_CONNECT_TIMEOUT_MS` (default 5000).
    pub connect_timeout: Duration,
    /// `LLM_FIRST_CHUNK_TIMEOUT_MS`: until the first text arrives, retries included (default 30000).
    pub first_chunk_timeout: Duration,
    /// `LLM_IDLE_TIMEOUT_MS`: longest silence between chunks (default 30000).
    pub idle_timeout: Duration,
    /// `LLM_TOTAL_TIMEOUT_MS`: a whole generation (default 300000).
    pub total_timeout: Duration,
    /// `LLM_MAX_RETRIES`: retries before the first chunk (default 2).
    pub max_retries: usize,
    /// `LLM_MODELS`: a comma-separated allow-list of the models `/v1/chat/completions` takes
    /// (and `/v1/models` lists); unset: any model, and `LLM_MODEL` listed.
    pub models: Option<Vec<String>>,
    /// `LLM_CONFIG`: named providers and the routes model names take through them (then the
    /// settings above are only the defaults of each provider's).
    pub routes: Option<super::routes::Routes>,
    /// The price table: the shipped prices with `LLM_PRICES` (JSON, or a path to it) over them.
    pub prices: crate::spend::Prices,
}

/// Amazon Bedrock (`LLM_PROVIDER=bedrock`).
#[derive(Debug, Clone)]
pub struct BedrockSettings {
    /// `AWS_REGION` (or `AWS_DEFAULT_REGION`).
    pub region: String,
    /// `AWS_ENDPOINT_URL_BEDROCK_RUNTIME` (or `AWS_ENDPOINT_URL`): another endpoint, such as a
    /// local one in tests.
    pub endpoint_url: Option<String>,
    pub credentials: AwsCredentials,
}

/// The credentials Lambda puts in the environment: `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`.
#[derive(Debug, Clone)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

/// Reads the AWS credentials of the environment; `hint` says what needs them.
pub fn aws_credentials(env: &dyn Env, hint: &'static str) -> Result<AwsCredentials, SettingsError> {
    let missing = |name| SettingsError::Missing { name, hint };
    Ok(AwsCredentials {
        access_key_id: env
            .var("AWS_ACCESS_KEY_ID")
            .ok_or_else(|| missing("AWS_ACCESS_KEY_ID"))?,
        secret_access_key: Secret::new(
            env.var("AWS_SECRET_ACCESS_KEY")
                .ok_or_else(|| missing("AWS_SECRET_ACCESS_KEY"))?,
        ),
        session_token: env.var("AWS_SESSION_TOKEN").map(Secret::new),
    })
}

pub(super) fn from_env(env: &dyn Env) -> Result<ProviderSettings, SettingsError> {
    let kind = match env.var("LLM_PROVIDER").as_deref() {
        None | Some("offline") => ProviderKind::Offline,
        Some("openai") => ProviderKind::OpenAi,
        Some("bedrock") => ProviderKind::Bedrock,
        Some(other) => {
            return Err(invalid(
                "LLM_PROVIDER",
                other,
                "expected offline, openai or bedrock",
            ));
        }
    };
    let bedrock = match kind {
        ProviderKind::Bedrock => Some(bedrock(env)?),
        _ => None,
    };
    let model = match kind {
        ProviderKind::Offline => env
            .var("LLM_MODEL")
            .unwrap_or_else(|| "offline-echo".into()),
        ProviderKind::OpenAi => env.var("LLM_MODEL").unwrap_or_else(|| "gpt-4o-mini".into()),
        ProviderKind::Bedrock => env.var("BEDROCK_MODEL_ID").ok_or(SettingsError::Missing {
            name: "BEDROCK_MODEL_ID",
            hint: "LLM_PROVIDER=bedrock needs a model ID such as amazon.nova-lite-v1:0 \
                   (or an inference profile ID such as us.amazon.nova-lite-v1:0)",
        })?,
    };
    let mut provider = ProviderSettings {
        kind,
        openai_base_url: env
            .var("OPENAI_BASE_URL")
            .unwrap_or_else(|| "https://api.openai.com/v1".into())
            .trim_end_matches('/')
            .to_owned(),
        openai_api_key: env.var("OPENAI_API_KEY").map(Secret::new),
        model,
        bedrock,
        offline_chunk_delay: millis(env, "OFFLINE_CHUNK_DELAY_MS", 20)?,
        connect_timeout: millis(env, "LLM_CONNECT_TIMEOUT_MS", 5000)?,
        first_chunk_timeout: millis(env, "LLM_FIRST_CHUNK_TIMEOUT_MS", 30_000)?,
        idle_timeout: millis(env, "LLM_IDLE_TIMEOUT_MS", 30_000)?,
        total_timeout: millis(env, "LLM_TOTAL_TIMEOUT_MS", 300_000)?,
        max_retries: parse(env, "LLM_MAX_RETRIES", 2usize)?,
        models: env.var("LLM_MODELS").map(|raw| {
            raw.split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect()
        }),
        routes: None,
        prices: crate::spend::Prices::with_overrides(env.var("LLM_PRICES").as_deref()).map_err(
            |reason| SettingsError::Invalid {
                name: "LLM_PRICES",
                value: env
                    .var("LLM_PRICES")
                    .unwrap_or_default()
                    .chars()
                    .take(80)
                    .collect(),
                reason,
            },
        )?,
    };
    provider.routes = super::routes::from_env(env, &provider)?;
    if provider.routes.is_some() {
        return Ok(provider);
    }
    if kind == ProviderKind::OpenAi
        && provider.openai_api_key.is_none()
        && provider.openai_base_url.contains("api.openai.com")
    {
        return Err(SettingsError::Missing {
            name: "OPENAI_API_KEY",
            hint: "LLM_PROVIDER=openai against the OpenAI API needs a key",
        });
    }
    Ok(provider)
}

fn bedrock(env: &dyn Env) -> Result<BedrockSettings, SettingsError> {
    Ok(BedrockSettings {
        region: env
            .var("AWS_REGION")
            .or_else(|| env.var("AWS_DEFAULT_REGION"))
            .ok_or(SettingsError::Missing {
                name: "AWS_REGION",
                hint: "LLM_PROVIDER=bedrock calls Bedrock in this region (Lambda sets it)",
            })?,
        endpoint_url: env
            .var("AWS_ENDPOINT_URL_BEDROCK_RUNTIME")
            .or_else(|| env.var("AWS_ENDPOINT_URL")),
        credentials: aws_credentials(
            env,
            "AWS credentials for Bedrock (Lambda sets them; locally: \
             eval \"$(aws configure export-credentials --format env)\")",
        )?,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::Settings;
    use super::*;

    fn env(pairs: &[(&'static str, &'static str)]) -> HashMap<&'static str, &'static str> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn openai_against_the_real_api_needs_a_key() {
        let e = env(&[
            ("DATABASE_URL", "postgres://x/y"),
            ("LLM_PROVIDER", "openai"),
        ]);
        let err = Settings::from_source(&e).unwrap_err().to_string();
        assert!(err.contains("OPENAI_API_KEY"), "{err}");
        let e = env(&[
            ("DATABASE_URL", "postgres://x/y"),
            ("LLM_PROVIDER", "openai"),
            ("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1/"),
        ]);
        let s = Settings::from_source(&e).unwrap();
        assert_eq!(s.provider.openai_base_url, "http://127.0.0.1:11434/v1");
    }

    #[test]
    fn unknown_provider_is_rejected() {
        let e = env(&[
            ("DATABASE_URL", "postgres://x/y"),
            ("LLM_PROVIDER", "magic"),
        ]);
        assert!(Settings::from_source(&e).is_err());
    }

    #[test]
    fn bedrock_needs_a_model_a_region_and_credentials() {
        let full = [
            ("DATABASE_URL", "postgres://x/y"),
            ("LLM_PROVIDER", "bedrock"),
            ("BEDROCK_MODEL_ID", "amazon.nova-lite-v1:0"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
        ];
        let s = Settings::from_source(&env(&full)).unwrap();
        assert_eq!(s.provider.kind, ProviderKind::Bedrock);
        assert_eq!(s.provider.model, "amazon.nova-lite-v1:0");
        let b = s.provider.bedrock.unwrap();
        assert_eq!((b.region.as_str(), b.endpoint_url), ("eu-west-1", None));
        assert!(b.credentials.session_token.is_none());
        for (i, (name, _)) in full.iter().enumerate().skip(2) {
            let mut without = full.to_vec();
            without.remove(i);
            let err = Settings::from_source(&env(&without))
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "without {name}: {err}");
        }
    }

    #[test]
    fn other_providers_need_no_aws_settings() {
        let s = Settings::from_source(&env(&[("DATABASE_URL", "postgres://x/y")])).unwrap();
        assert!(s.provider.bedrock.is_none());
    }
}
