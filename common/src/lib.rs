//! Shared code of the LLM streaming service: settings, domain types, stores, providers, HTTP helpers.

pub mod api;
pub mod auth;
pub mod domain;
pub mod error;
pub mod guard;
pub mod http;
pub mod provider;
pub mod secrets;
pub mod settings;
pub mod spend;
pub mod store;
/// Connections to PostgreSQL (the pool backend's): see [`store::db`].
pub use store::db;
pub mod telemetry;
pub mod young;

pub use domain::{Conversation, Status};
pub use error::ApiError;
pub use settings::Settings;

/// Runs a Lambda runtime loop (`run` starts `lambda_http::run` or its streaming twin), and starts
/// it again when it ends on an error: the runtime client gives up on a Runtime API connection
/// the server closed between two polls (seen under `cargo lambda watch` as `IncompleteMessage`),
/// and a function that exits then is not restarted there. After five failures in a row, each
/// within a second of the last start, the error is returned and the process ends (Lambda then
/// starts a new one).
pub async fn run_lambda<F, Fut>(mut run: F) -> Result<(), lambda_http::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), lambda_http::Error>>,
{
    let mut failures: u32 = 0;
    loop {
        let started = std::time::Instant::now();
        match run().await {
            Ok(()) => return Ok(()),
            Err(e) => {
                if started.elapsed() > std::time::Duration::from_secs(1) {
                    failures = 0;
                }
                failures += 1;
                if failures > 5 {
                    return Err(e);
                }
                tracing::warn!(error = %e, failures, "the Lambda runtime loop failed; polling again");
                tokio::time::sleep(std::time::Duration::from_millis(20 * u64::from(failures)))
                    .await;
            }
        }
    }
}

/// What every process says once at start about its settings: that anyone may call it when
/// `AUTH=off`.
pub fn announce(settings: &Settings) {
    if settings.auth.mode == settings::AuthMode::Off {
        tracing::warn!("AUTH=off: every request is served without a key, as owner `local`");
    }
}

/// The `/health` check of a process: the store's ping, asked at most once per
/// `HEALTH_CACHE_MS`.
pub fn health(
    store: std::sync::Arc<dyn store::HealthCheck>,
    settings: &Settings,
) -> std::sync::Arc<dyn store::HealthCheck> {
    std::sync::Arc::new(store::CachedHealth::new(store, settings.db.health_cache))
}

/// Makes ring the process-wide rustls crypto provider (for HTTP clients built without an
/// explicit TLS configuration). Harmless when called again.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn the_lambda_loop_polls_again_after_a_failure_and_gives_up_after_five() {
        let calls = AtomicU32::new(0);
        let recovered = super::run_lambda(|| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err("connection closed".into())
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert!(recovered.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let calls = AtomicU32::new(0);
        let failed = super::run_lambda(|| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err("down".into()) }
        })
        .await;
        assert!(failed.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 6);
    }
}
