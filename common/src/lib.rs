//! Shared code of the LLM streaming service: settings, domain types, stores, providers, HTTP helpers.

pub mod api;
pub mod auth;
pub mod db;
pub mod domain;
pub mod error;
pub mod guard;
pub mod http;
pub mod provider;
pub mod settings;
pub mod store;
pub mod telemetry;

pub use domain::{Conversation, Status};
pub use error::ApiError;
pub use settings::Settings;

/// Makes ring the process-wide rustls crypto provider (for HTTP clients built without an
/// explicit TLS configuration). Harmless when called again.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
