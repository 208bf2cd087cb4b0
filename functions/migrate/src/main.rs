//! The `migrate` Lambda function: applies the pending schema migrations, through the Data API or
//! the pool (whichever the settings name), and answers `{"applied": N}`. Invoke it once after
//! each deploy; running it again applies nothing. Invoked with `{"task": "purge"}` (the daily
//! schedule does, when `RETENTION_DAYS` is set) it purges what the retention no longer keeps
//! and answers what went.

use common::Settings;
use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    common::telemetry::init();
    let settings = Settings::load().await?;
    let store = common::store::from_settings(&settings)?;
    let search_config = settings.db.search_config.clone();
    let handler = move |event: LambdaEvent<Value>| {
        let store = store.clone();
        let search_config = search_config.clone();
        let settings = settings.clone();
        async move {
            if event.payload.get("task").and_then(Value::as_str) == Some("purge") {
                return purge(&settings, store.as_ref()).await;
            }
            let applied = store.migrate(&search_config).await?;
            tracing::info!(applied, "migrations applied");
            let logins =
                common::secrets::ensure_logins(&common::settings::ProcessEnv, store.as_ref())
                    .await?;
            Ok::<_, lambda_runtime::Error>(json!({ "applied": applied, "logins": logins }))
        }
    };
    common::run_lambda(|| lambda_runtime::run(service_fn(handler.clone()))).await
}

/// The scheduled purge: threads older than `RETENTION_DAYS` go (nothing when it is unset).
async fn purge(
    settings: &Settings,
    store: &dyn common::store::Backend,
) -> Result<Value, lambda_runtime::Error> {
    let Some(days) = settings.db.retention_days else {
        tracing::info!("purge skipped: RETENTION_DAYS is unset");
        return Ok(json!({ "purged": null, "reason": "RETENTION_DAYS is unset" }));
    };
    let done = common::store::lifecycle::purge_older_than(store, settings, days, false).await?;
    Ok(json!({ "purged": done, "retention_days": days }))
}
