//! `/v1/chat/completions` with three function tools offered beside the same call without them
//! and beside a body without tools padded to the same size (a `user` string), at one and at 20
//! streams: an A/B on one service in which every batch sent to it follows a batch sent to the
//! upstream directly with the same body, the bodies in turn forwards and backwards, so that
//! each body follows each other one equally often (a fixed rotation of paths cannot tell a
//! body's cost from what ran before it). The upstream sends its chunks without gaps, so that a
//! round takes milliseconds rather than 0.6 s and many rounds fit.

use std::time::Duration;

use crate::stats::{ms, over, percentile, table};
use crate::stream_bench::{NO_GAPS, WORDS, chat_bytes, chat_request, round};

/// One body's time to first content, directly and through the service (p50, p99).
#[derive(Clone, Copy, Default)]
struct Figures {
    direct_p50: Duration,
    p50: Duration,
    p99: Duration,
}

impl Figures {
    /// What the service adds to the time to first content p50.
    fn added(&self) -> Duration {
        self.p50.saturating_sub(self.direct_p50)
    }
}

/// Through the service with tools, and padded, over without, at one concurrency: the time to
/// first content p50, and what the service adds to it (over the upstream called directly with
/// the same body).
#[derive(Clone, Copy, Default)]
pub struct Ratios {
    pub tools_p50: f64,
    pub tools_added: f64,
    pub padded_p50: f64,
    pub padded_added: f64,
}

/// The ratios at one stream and at 20.
pub struct ToolsAb {
    pub one: Ratios,
    pub twenty: Ratios,
}

/// The plain body with a `user` string that brings it to `len` bytes.
fn padded(plain: &[u8], len: usize) -> anyhow::Result<bytes::Bytes> {
    let mut body: serde_json::Value = serde_json::from_slice(plain)?;
    // `,"user":""` is 10 bytes.
    let pad = len.saturating_sub(plain.len() + 10);
    body["user"] = "u".repeat(pad).into();
    Ok(bytes::Bytes::from(body.to_string()))
}

/// `concurrency` streams of each body to each of `urls`, `rounds` times (the figures of each
/// body).
async fn measure(
    http: &reqwest::Client,
    urls: [&str; 2],
    bodies: &[bytes::Bytes; 3],
    concurrency: usize,
    rounds: usize,
) -> anyhow::Result<[Figures; 3]> {
    let mut samples: [[Vec<Duration>; 2]; 3] = Default::default();
    for r in 0..rounds {
        let mut order = [0, 1, 2];
        if r % 2 == 1 {
            order.reverse();
        }
        for i in order {
            for (j, url) in urls.into_iter().enumerate() {
                let batch = round(concurrency, concurrency, || {
                    let (http, url, body) = (http.clone(), url.to_owned(), bodies[i].clone());
                    async move { chat_bytes(&http, &url, body).await }
                })
                .await?;
                samples[i][j].extend(batch.iter().map(|s| s.ttfb));
            }
        }
    }
    let mut figures = [Figures::default(); 3];
    for (f, [mut d, mut s]) in figures.iter_mut().zip(samples) {
        *f = Figures {
            direct_p50: percentile(&mut d, 50.0),
            p50: percentile(&mut s, 50.0),
            p99: percentile(&mut s, 99.0),
        };
    }
    Ok(figures)
}

/// Runs the A/B against the upstream's `/chat/completions` at `direct` and the service's
/// `/v1/chat/completions` at `chat` (prints the table).
pub async fn run(http: &reqwest::Client, direct: &str, chat: &str) -> anyhow::Result<ToolsAb> {
    let plain = chat_request(NO_GAPS, false);
    let tools = chat_request(NO_GAPS, true);
    let padded = padded(&plain, tools.len())?;
    let bodies = [plain, tools, padded];
    let names = ["plain", "three tools", "plain, padded"];
    let mut rows = Vec::new();
    let mut result = ToolsAb {
        one: Ratios::default(),
        twenty: Ratios::default(),
    };
    for (concurrency, rounds) in [(1usize, 2000usize), (20, 1500)] {
        let figures = measure(http, [direct, chat], &bodies, concurrency, rounds).await?;
        let [p, t, pad] = figures;
        let ratios = Ratios {
            tools_p50: over(t.p50, p.p50),
            tools_added: over(t.added(), p.added()),
            padded_p50: over(pad.p50, p.p50),
            padded_added: over(pad.added(), p.added()),
        };
        if concurrency == 1 {
            result.one = ratios;
        } else {
            result.twenty = ratios;
        }
        for ((name, body), f) in names.iter().zip(&bodies).zip(&figures) {
            rows.push(vec![
                concurrency.to_string(),
                rounds.to_string(),
                (*name).to_owned(),
                body.len().to_string(),
                ms(f.direct_p50),
                ms(f.p50),
                ms(f.added()),
                format!("{:.3}", over(f.p50, p.p50)),
                format!("{:.2}", over(f.added(), p.added())),
                ms(f.p99),
            ]);
        }
    }
    println!(
        "\n/v1/chat/completions with three tools and padded to the same size beside plain: each \
         batch after the upstream called directly with the same body, the upstream's {WORDS} \
         chunks without gaps (time to first content, milliseconds; ratios over plain):\n"
    );
    table(
        &[
            "streams",
            "rounds",
            "body",
            "bytes",
            "direct p50",
            "/v1 p50",
            "/v1 added p50",
            "/v1 p50 ratio",
            "added ratio",
            "/v1 p99",
        ],
        &rows,
    );
    Ok(result)
}
