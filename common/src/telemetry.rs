//! Logging: JSON lines on stdout (what CloudWatch wants), level from `RUST_LOG`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once. JSON by default; `LOG_FORMAT=pretty` for humans.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let pretty = std::env::var("LOG_FORMAT").is_ok_and(|v| v == "pretty");
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = if pretty {
        builder.try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_ansi(false)
            .try_init()
    };
    // A second init (tests) keeps the first subscriber.
    drop(result);
}
