//! `LLM_CONFIG`: named providers and the routes that model names take through them, in TOML (a
//! path, or the TOML itself when the value holds a newline). Every mistake (a syntax error, an
//! unknown provider or field, a bad kind, a missing key variable) stops the process at start,
//! with the line it is on.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::provider::{BedrockSettings, ProviderKind, ProviderSettings, aws_credentials};
use super::{Env, Secret, SettingsError};

/// The routes: what a model name a client sends leads to.
#[derive(Debug, Clone)]
pub struct Routes {
    /// What a request without `model` gets.
    pub default_model: String,
    /// By name: how to reach each provider, and its own limits.
    pub providers: BTreeMap<String, RoutedProvider>,
    /// By the model name clients send.
    pub models: BTreeMap<String, Route>,
}

/// A provider of `[providers.NAME]`.
#[derive(Debug, Clone)]
pub struct RoutedProvider {
    pub settings: ProviderSettings,
    /// Until its first token (per attempt).
    pub first_token_timeout: Duration,
    /// The longest silence between its chunks.
    pub idle_timeout: Duration,
    /// Its whole answer.
    pub total_timeout: Duration,
    /// Failures within a minute that put it in cooldown, and how long that lasts.
    pub cooldown_failures: usize,
    pub cooldown: Duration,
}

/// A model's route: its targets in order.
#[derive(Debug, Clone)]
pub struct Route {
    pub targets: Vec<Target>,
    /// A target failing mid-answer is replaced by the next, which continues the text.
    pub continue_on_failure: bool,
}

/// A provider and the model it is called with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub provider: String,
    pub model: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    default_model: Option<Spanned<String>>,
    #[serde(default)]
    providers: BTreeMap<String, ProviderFile>,
    #[serde(default)]
    models: BTreeMap<String, ModelFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderFile {
    kind: Spanned<String>,
    base_url: Option<String>,
    api_key_env: Option<Spanned<String>>,
    first_token_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    total_timeout_ms: Option<u64>,
    cooldown_failures: Option<usize>,
    cooldown_ms: Option<u64>,
    region: Option<String>,
    endpoint_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    route: Spanned<Vec<TargetFile>>,
    #[serde(default)]
    continue_on_failure: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetFile {
    provider: Spanned<String>,
    model: String,
}

fn refused(reason: String) -> SettingsError {
    SettingsError::Config(reason)
}

/// `LLM_CONFIG`, when set: the routes, each provider's settings built on `base` (the
/// environment's timeouts and retries).
pub(super) fn from_env(
    env: &dyn Env,
    base: &ProviderSettings,
) -> Result<Option<Routes>, SettingsError> {
    let Some(raw) = env.var("LLM_CONFIG") else {
        return Ok(None);
    };
    let text = if raw.contains('\n') {
        raw
    } else {
        std::fs::read_to_string(&raw)
            .map_err(|e| refused(format!("cannot read the file {raw}: {e}")))?
    };
    parse(&text, env, base).map(Some)
}

/// The line (from 1) of byte `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// The routes of `text`.
pub fn parse(text: &str, env: &dyn Env, base: &ProviderSettings) -> Result<Routes, SettingsError> {
    let file: File = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        let message = e.message().to_owned();
        refused(match line {
            Some(line) => format!("line {line}: {message}"),
            None => message,
        })
    })?;
    let at = |span: std::ops::Range<usize>, what: String| {
        refused(format!("line {}: {what}", line_of(text, span.start)))
    };
    let mut providers = BTreeMap::new();
    for (name, p) in file.providers {
        let kind = match p.kind.get_ref().as_str() {
            "openai" => ProviderKind::OpenAi,
            "bedrock" => ProviderKind::Bedrock,
            "offline" => ProviderKind::Offline,
            other => {
                return Err(at(
                    p.kind.span(),
                    format!("providers.{name}: kind {other:?} is not openai, bedrock or offline"),
                ));
            }
        };
        let key = match &p.api_key_env {
            None => None,
            Some(var) => Some(Secret::new(env.var(var.get_ref()).ok_or_else(|| {
                at(
                    var.span(),
                    format!(
                        "providers.{name}: api_key_env names {}, which is not set",
                        var.get_ref()
                    ),
                )
            })?)),
        };
        let mut settings = base.clone();
        settings.kind = kind;
        settings.openai_api_key = key;
        if let Some(url) = &p.base_url {
            settings.openai_base_url = url.trim_end_matches('/').to_owned();
        }
        settings.bedrock = match kind {
            ProviderKind::Bedrock => Some(BedrockSettings {
                region: p
                    .region
                    .clone()
                    .or_else(|| env.var("AWS_REGION"))
                    .or_else(|| env.var("AWS_DEFAULT_REGION"))
                    .ok_or_else(|| {
                        at(
                            p.kind.span(),
                            format!(
                                "providers.{name}: a bedrock provider needs region (or AWS_REGION)"
                            ),
                        )
                    })?,
                endpoint_url: p
                    .endpoint_url
                    .clone()
                    .or_else(|| env.var("AWS_ENDPOINT_URL_BEDROCK_RUNTIME")),
                credentials: aws_credentials(env, "AWS credentials for a bedrock provider")?,
            }),
            _ => None,
        };
        let ms = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_millis);
        providers.insert(
            name,
            RoutedProvider {
                first_token_timeout: ms(p.first_token_timeout_ms, Duration::from_secs(10))
                    .min(base.first_chunk_timeout),
                idle_timeout: ms(p.idle_timeout_ms, base.idle_timeout),
                total_timeout: ms(p.total_timeout_ms, base.total_timeout),
                cooldown_failures: p.cooldown_failures.unwrap_or(3).max(1),
                cooldown: ms(p.cooldown_ms, Duration::from_secs(30)),
                settings,
            },
        );
    }
    // In AWS the template passes the Bedrock models its policy covers: a route naming another
    // would fail at its first call, so it is refused here.
    let allowed_bedrock: Option<Vec<String>> = env.var("LLM_CONFIG_BEDROCK_MODELS").map(|v| {
        v.split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
            .collect()
    });
    let mut models = BTreeMap::new();
    for (name, m) in file.models {
        let span = m.route.span();
        let route = m.route.into_inner();
        if route.is_empty() {
            return Err(at(
                span,
                format!("models.{name}: the route names no target"),
            ));
        }
        let mut targets = Vec::with_capacity(route.len());
        for t in route {
            let Some(target) = providers.get(t.provider.get_ref()) else {
                return Err(at(
                    t.provider.span(),
                    format!(
                        "models.{name}: the route names provider {:?}, which [providers] does not define",
                        t.provider.get_ref()
                    ),
                ));
            };
            if target.settings.kind == ProviderKind::Bedrock
                && let Some(allowed) = &allowed_bedrock
                && !allowed
                    .iter()
                    .any(|a| a == &t.model || a.ends_with(&format!("/{}", t.model)))
            {
                return Err(at(
                    t.provider.span(),
                    format!(
                        "models.{name}: Bedrock model {:?} is not among those the deployment may \
                         invoke (LLM_CONFIG_BEDROCK_MODELS: the template's BedrockRouteModels \
                         and BedrockRouteProfileArns)",
                        t.model
                    ),
                ));
            }
            targets.push(Target {
                provider: t.provider.into_inner(),
                model: t.model,
            });
        }
        models.insert(
            name,
            Route {
                targets,
                continue_on_failure: m.continue_on_failure,
            },
        );
    }
    let default_model = match file.default_model {
        Some(m) if models.contains_key(m.get_ref()) => m.into_inner(),
        Some(m) => {
            return Err(at(
                m.span(),
                format!("default_model {:?} is not one of [models]", m.get_ref()),
            ));
        }
        None => models
            .keys()
            .next()
            .cloned()
            .ok_or_else(|| refused("no [models.NAME] is defined".into()))?,
    };
    Ok(Routes {
        default_model,
        providers,
        models,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn base() -> ProviderSettings {
        let env: HashMap<&'static str, &'static str> = HashMap::new();
        super::super::provider::from_env(&env).unwrap()
    }

    fn env() -> HashMap<&'static str, &'static str> {
        HashMap::from([("PRIMARY_KEY", "sk-1")])
    }

    const GOOD: &str = r#"
default_model = "chat"

[providers.primary]
kind = "openai"
base_url = "http://127.0.0.1:9/v1/"
api_key_env = "PRIMARY_KEY"
first_token_timeout_ms = 2000

[providers.backup]
kind = "offline"
cooldown_failures = 2

[models.chat]
route = [{ provider = "primary", model = "gpt-4o-mini" },
         { provider = "backup", model = "echo" }]
continue_on_failure = true
"#;

    #[test]
    fn a_config_gives_providers_and_routes() {
        let r = parse(GOOD, &env(), &base()).unwrap();
        assert_eq!(r.default_model, "chat");
        let chat = &r.models["chat"];
        assert!(chat.continue_on_failure);
        assert_eq!(chat.targets[1].model, "echo");
        let primary = &r.providers["primary"];
        assert_eq!(primary.settings.openai_base_url, "http://127.0.0.1:9/v1");
        assert_eq!(
            primary.settings.openai_api_key.as_ref().unwrap().expose(),
            "sk-1"
        );
        assert_eq!(primary.first_token_timeout, Duration::from_secs(2));
        assert_eq!(r.providers["backup"].cooldown_failures, 2);
        assert_eq!(r.providers["backup"].cooldown, Duration::from_secs(30));
    }

    #[test]
    fn a_bedrock_model_the_deployment_may_not_invoke_is_refused() {
        let config = r#"
[providers.aws]
kind = "bedrock"
region = "eu-west-1"

[models.chat]
route = [{ provider = "aws", model = "us.amazon.nova-lite-v1:0" }]
"#;
        let mut env = HashMap::from([
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("LLM_CONFIG_BEDROCK_MODELS", "amazon.nova-lite-v1:0"),
        ]);
        let e = parse(config, &env, &base()).unwrap_err().to_string();
        assert!(
            e.contains("line 7") && e.contains("us.amazon.nova-lite-v1:0"),
            "{e}"
        );
        env.insert(
            "LLM_CONFIG_BEDROCK_MODELS",
            "amazon.nova-lite-v1:0,arn:aws:bedrock:eu-west-1:123456789012:inference-profile/us.amazon.nova-lite-v1:0",
        );
        assert!(parse(config, &env, &base()).is_ok());
    }

    #[test]
    fn mistakes_are_refused_with_their_line() {
        for (bad, line, words) in [
            (
                GOOD.replace("kind = \"offline\"", "kind = \"azure\""),
                11,
                "kind \"azure\"",
            ),
            (
                GOOD.replace("provider = \"backup\"", "provider = \"nope\""),
                16,
                "\"nope\"",
            ),
            (GOOD.replace("PRIMARY_KEY", "MISSING_KEY"), 7, "MISSING_KEY"),
            (
                GOOD.replace("cooldown_failures", "cooldown_failure"),
                12,
                "cooldown_failure",
            ),
            (
                GOOD.replace("default_model = \"chat\"", "default_model = \"other\""),
                2,
                "other",
            ),
            (GOOD.replace("route = [{", "route = {"), 15, ""),
        ] {
            let e = parse(&bad, &env(), &base()).unwrap_err().to_string();
            assert!(e.contains(&format!("line {line}")), "{e}");
            assert!(e.contains(words), "{e}");
        }
    }
}
