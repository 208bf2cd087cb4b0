//! Routing (`LLM_CONFIG`): what a route of one target costs beside today's single provider
//! (nothing measurable is the goal), and the time to first content when a route's first target
//! is down (connect refused; its cooldown off, so that every call meets it) beside a healthy
//! route. One stream at a time, the same local upstream throughout.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use testkit::fake_openai::FakeOpenAi;

use crate::stats::{ms, percentile, table};
use crate::stream_bench::{round, service_with};

/// What the routing benchmark reports (p50s): a one-target route minus the single provider,
/// and a route whose first target is down minus a healthy one.
pub struct RoutingOverheads {
    pub one_target_added: Duration,
    pub down_first_added: Duration,
}

/// Runs beside the stream benchmark's service (`plain`, the single provider) on its upstream.
pub async fn run(
    http: &reqwest::Client,
    fake: &Arc<FakeOpenAi>,
    plain: &str,
) -> anyhow::Result<RoutingOverheads> {
    let refused = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        l.local_addr()?
    };
    let config = format!(
        "[providers.up]\nkind = \"openai\"\nbase_url = \"{}\"\n\
         [providers.down]\nkind = \"openai\"\nbase_url = \"http://{refused}/v1\"\n\
         cooldown_failures = 1000000\n\
         [models.one]\nroute = [{{provider = \"up\", model = \"m\"}}]\n\
         [models.failover]\nroute = [{{provider = \"down\", model = \"m\"}}, \
         {{provider = \"up\", model = \"m\"}}]\n",
        fake.base_url()
    );
    let db = testkit::TestDb::new().await;
    let settings = db.settings_with(&[("LLM_CONFIG", config.as_str()), ("DB_POOL_SIZE", "16")]);
    let store = Arc::new(common::store::PgStore::from_settings(&settings)?);
    let state = stream::StreamState::from_settings(&settings, store.clone())
        .map_err(|e| anyhow::anyhow!(e))?;
    let app = stream::router(
        state,
        store.clone(),
        store.clone(),
        common::auth::Auth::off(store),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let routed = format!("http://{}/stream", listener.local_addr()?);
    tokio::spawn(async move { common::http::serve(listener, app).await });

    let p50 = |url: String, body: String, n: usize| {
        let h = http.clone();
        async move {
            let samples = round(1, n, move || {
                let (h, u, b) = (h.clone(), url.clone(), body.clone());
                async move { service_with(&h, &u, b).await }
            })
            .await?;
            let mut t: Vec<Duration> = samples.iter().map(|s| s.ttfb).collect();
            anyhow::Ok(percentile(&mut t, 50.0))
        }
    };
    let body = |model: Option<&str>| {
        let mut b = json!({"prompt": "hi"});
        if let Some(m) = model {
            b["model"] = m.into();
        }
        b.to_string()
    };
    // Warm up both.
    p50(plain.to_owned(), body(None), 20).await?;
    p50(routed.clone(), body(Some("one")), 20).await?;
    let single = p50(plain.to_owned(), body(None), 200).await?;
    let one = p50(routed.clone(), body(Some("one")), 200).await?;
    let failover = p50(routed, body(Some("failover")), 200).await?;
    println!(
        "\nrouting: time to first byte of /stream, one stream at a time, the same upstream (milliseconds, p50):\n"
    );
    table(
        &[
            "single provider",
            "route of one target",
            "added",
            "route, first target down (connect refused)",
            "added over the healthy route",
        ],
        &[vec![
            ms(single),
            ms(one),
            ms(one.saturating_sub(single)),
            ms(failover),
            ms(failover.saturating_sub(one)),
        ]],
    );
    Ok(RoutingOverheads {
        one_target_added: one.saturating_sub(single),
        down_first_added: failover.saturating_sub(one),
    })
}
