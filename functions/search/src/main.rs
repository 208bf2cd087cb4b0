//! The `search` Lambda function: wiring only.

use common::Settings;
use common::auth::Auth;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    common::telemetry::init();
    let settings = Settings::load().await?;
    let store = common::store::from_settings(&settings)?;
    common::announce(&settings);
    let candidates = settings.db.search_candidates;
    let auth = Auth::from_settings(&settings.auth, store.clone());
    let router = search::router(
        store.clone(),
        candidates,
        common::health(store.clone(), &settings),
        auth,
    );
    common::run_lambda(|| lambda_http::run(router.clone())).await
}
