//! The `migrate` Lambda function: applies the pending schema migrations, through the Data API or
//! the pool (whichever the settings name), and answers `{"applied": N}`. Invoke it once after
//! each deploy; running it again applies nothing.

use common::Settings;
use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    common::telemetry::init();
    let settings = Settings::load().await?;
    let store = common::store::from_settings(&settings)?;
    let search_config = settings.db.search_config.clone();
    let handler = move |_event: LambdaEvent<Value>| {
        let store = store.clone();
        let search_config = search_config.clone();
        async move {
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
