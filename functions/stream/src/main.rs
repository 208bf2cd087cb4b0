//! The `stream` Lambda function (response-streaming mode): wiring only.

use common::Settings;
use common::auth::Auth;
use stream::StreamState;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    common::telemetry::init();
    let settings = Settings::load().await?;
    let store = common::store::from_settings(&settings)?;
    common::announce(&settings);
    let state = StreamState::from_settings(&settings, store.clone())?;
    let auth = Auth::from_settings(&settings.auth, store.clone());
    let router = stream::router(
        state,
        store.clone(),
        common::health(store.clone(), &settings),
        auth,
    );
    common::run_lambda(|| lambda_http::run_with_streaming_response(router.clone())).await
}
