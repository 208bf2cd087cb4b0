//! The `history` Lambda function (`/history`, `/threads`, `/usage` and the playground page): wiring only.

use common::Settings;
use common::auth::Auth;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    common::telemetry::init();
    let settings = Settings::load().await?;
    let store = common::store::from_settings(&settings)?;
    common::announce(&settings);
    let auth = Auth::from_settings(&settings.auth, store.clone());
    let health = common::health(store.clone(), &settings);
    let stream_url = settings.playground.stream_url.as_deref();
    let router = history::router(
        store.clone(),
        store.clone(),
        store.clone(),
        store,
        health,
        auth,
        stream_url,
    );
    common::run_lambda(|| lambda_http::run(router.clone())).await
}
