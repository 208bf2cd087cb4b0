//! Routing (`LLM_CONFIG`): a model name a client sends leads to a route, an ordered list of
//! targets (a provider and the model it is called with). The router is a [`Provider`] like any
//! other, so everything above it (guardrails, the live turn, saving) is unchanged.
//!
//! - **Before the first text**, a target that fails (connect error, no first token within its
//!   `first_token_timeout_ms`, a 5xx, a 429, an unknown model or refused credentials) is
//!   replaced by the next at once; in a route of more than one target a target is not retried
//!   (each is built without retries), a route of one keeps the retries with backoff. A 400 (the
//!   request's own fault) is not tried elsewhere.
//! - **After it**, with `continue_on_failure`, a target that fails mid-answer (a cut, an error
//!   event, a silence past its `idle_timeout_ms`, its whole answer past `total_timeout_ms`) is
//!   replaced by the next, which receives the messages plus an assistant message holding the
//!   text so far, and continues it.
//! - **Cooldown**: a target that failed `cooldown_failures` times within a minute is skipped for
//!   `cooldown_ms`; when every target of a route is cooling down, the first is tried anyway.
//!   Per process.
//! - Every target tried is noted in the request's [`Attempts`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;

use super::{Chunk, ChunkStream, CompletionRequest, Message, Provider, ProviderError, Role};
use crate::domain::Attempt;
use crate::settings::Routes;

/// How long failures count toward a cooldown.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

struct TargetRun {
    provider_name: String,
    model: String,
    provider: Arc<dyn Provider>,
    first_token_timeout: Duration,
    idle_timeout: Duration,
    total_timeout: Duration,
    cooldown_failures: usize,
    cooldown: Duration,
}

struct RouteRun {
    targets: Vec<Arc<TargetRun>>,
    continue_on_failure: bool,
}

#[derive(Default)]
struct Health {
    failures: VecDeque<Instant>,
    cooling_until: Option<Instant>,
}

struct Inner {
    routes: HashMap<String, Arc<RouteRun>>,
    /// By `provider/model`.
    health: Mutex<HashMap<String, Health>>,
}

/// The provider of `LLM_CONFIG`'s routes.
pub struct Router {
    inner: Arc<Inner>,
    default_model: String,
    name: &'static str,
    models: Vec<String>,
}

impl Router {
    /// Builds every target's provider (an error stops the process at start). `max_retries`
    /// applies to routes of one target; in longer routes the next target is the retry.
    pub fn new(routes: &Routes, max_retries: usize) -> Result<Self, ProviderError> {
        let mut runs = HashMap::new();
        for (name, route) in &routes.models {
            let mut targets = Vec::new();
            for t in &route.targets {
                let p = &routes.providers[&t.provider];
                let mut settings = p.settings.clone();
                settings.model = t.model.clone();
                settings.max_retries = if route.targets.len() > 1 {
                    0
                } else {
                    max_retries
                };
                targets.push(Arc::new(TargetRun {
                    provider_name: t.provider.clone(),
                    model: t.model.clone(),
                    provider: super::one(&settings)?,
                    first_token_timeout: p.first_token_timeout,
                    idle_timeout: p.idle_timeout,
                    total_timeout: p.total_timeout,
                    cooldown_failures: p.cooldown_failures,
                    cooldown: p.cooldown,
                }));
            }
            runs.insert(
                name.clone(),
                Arc::new(RouteRun {
                    targets,
                    continue_on_failure: route.continue_on_failure,
                }),
            );
        }
        // The name a turn starts with (its answering target's replaces it): the default
        // route's first provider. Leaked once at start: names are few and live as long as the
        // process.
        let first = routes.models[&routes.default_model].targets[0]
            .provider
            .clone();
        Ok(Self {
            inner: Arc::new(Inner {
                routes: runs,
                health: Mutex::new(HashMap::new()),
            }),
            default_model: routes.default_model.clone(),
            name: Box::leak(first.into_boxed_str()),
            models: routes.models.keys().cloned().collect(),
        })
    }
}

impl Inner {
    fn health(&self) -> std::sync::MutexGuard<'_, HashMap<String, Health>> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cooling(&self, t: &TargetRun, now: Instant) -> bool {
        let key = format!("{}/{}", t.provider_name, t.model);
        self.health()
            .get(&key)
            .and_then(|h| h.cooling_until)
            .is_some_and(|until| until > now)
    }

    /// Notes a failure of `t`; its `cooldown_failures`-th within a minute starts a cooldown.
    fn failed(&self, t: &TargetRun) {
        let now = Instant::now();
        let mut health = self.health();
        let h = health
            .entry(format!("{}/{}", t.provider_name, t.model))
            .or_default();
        h.failures.push_back(now);
        while h
            .failures
            .front()
            .is_some_and(|f| now.duration_since(*f) > FAILURE_WINDOW)
        {
            h.failures.pop_front();
        }
        if h.failures.len() >= t.cooldown_failures {
            h.failures.clear();
            h.cooling_until = Some(now + t.cooldown);
            tracing::warn!(provider = %t.provider_name, model = %t.model,
                cooldown_ms = t.cooldown.as_millis() as u64, "target cooling down");
        }
    }

    /// The targets of `route` from index `from` on to try, those cooling down left out (when
    /// all of the route's are, its first).
    fn order(&self, route: &RouteRun, from: usize) -> Vec<usize> {
        let now = Instant::now();
        let ready: Vec<usize> = (from..route.targets.len())
            .filter(|i| !self.cooling(&route.targets[*i], now))
            .collect();
        if ready.is_empty() && from == 0 {
            vec![0]
        } else {
            ready
        }
    }
}

fn attempt(t: &TargetRun, started: Instant, error: Option<&ProviderError>, chars: u64) -> Attempt {
    Attempt {
        provider: t.provider_name.clone(),
        model: t.model.clone(),
        status: match error {
            Some(ProviderError::Status { status, .. }) => Some(*status),
            _ => None,
        },
        error_code: error.map(|e| e.code().to_owned()),
        ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        chars,
    }
}

/// A 400 is the request's own fault: no other target would take it.
fn final_for_route(e: &ProviderError) -> bool {
    e.code() == "provider_bad_request"
}

/// Calls `t` and reads up to its first content (or its end) within its first-token timeout.
async fn open(
    t: &TargetRun,
    request: CompletionRequest,
) -> Result<(Vec<Chunk>, ChunkStream), ProviderError> {
    let call = async {
        let mut stream = t.provider.stream(request).await?;
        let mut head = Vec::new();
        loop {
            match stream.next().await {
                Some(Ok(c @ (Chunk::Text(_) | Chunk::ToolCall(_) | Chunk::Finish { .. }))) => {
                    head.push(c);
                    return Ok((head, stream));
                }
                Some(Ok(other)) => head.push(other),
                Some(Err(e)) => return Err(e),
                None => return Err(ProviderError::Incomplete),
            }
        }
    };
    tokio::time::timeout(t.first_token_timeout, call)
        .await
        .unwrap_or(Err(ProviderError::Timeout("first chunk")))
}

/// Tries the route's targets from `from` on until one gives its first content; notes each.
/// Returns it, its index, its start and what it sent so far.
async fn first_answer(
    inner: &Inner,
    route: &RouteRun,
    from: usize,
    request: &CompletionRequest,
) -> Result<(usize, Instant, Vec<Chunk>, ChunkStream), ProviderError> {
    let mut last = None;
    for i in inner.order(route, from) {
        let t = &route.targets[i];
        let mut req = request.clone();
        req.model = t.model.clone();
        let started = Instant::now();
        if let Some(param) = t.provider.unsupported(&req) {
            tracing::info!(provider = %t.provider_name, param, "target skipped: it cannot honour the request");
            request.attempts.push(Attempt {
                error_code: Some("unsupported_parameter".into()),
                ..attempt(t, started, None, 0)
            });
            continue;
        }
        match open(t, req).await {
            Ok((head, stream)) => return Ok((i, started, head, stream)),
            Err(e) => {
                request.attempts.push(attempt(t, started, Some(&e), 0));
                tracing::warn!(provider = %t.provider_name, model = %t.model, code = e.code(),
                    error = %e, "target failed before its first text");
                if final_for_route(&e) {
                    return Err(e);
                }
                inner.failed(t);
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or(ProviderError::Api {
        message: "no target of the route could take the request".into(),
    }))
}

/// The answer as it streams, from one target and (with `continue_on_failure`) the next.
struct Flow {
    inner: Arc<Inner>,
    route: Arc<RouteRun>,
    request: CompletionRequest,
    target: usize,
    started: Instant,
    stream: ChunkStream,
    head: VecDeque<Chunk>,
    /// The text so far (all targets), and this target's characters of it.
    text: String,
    chars: u64,
    called_tools: bool,
    done: bool,
}

impl Flow {
    fn note(&mut self, error: Option<&ProviderError>) {
        let t = &self.route.targets[self.target];
        self.request
            .attempts
            .push(attempt(t, self.started, error, self.chars));
    }

    /// The target after this one takes over (it receives the text so far as an assistant
    /// message); false when none can.
    async fn continue_elsewhere(&mut self) -> bool {
        let mut request = self.request.clone();
        request
            .messages
            .push(Message::new(Role::Assistant, self.text.clone()));
        match first_answer(&self.inner, &self.route, self.target + 1, &request).await {
            Ok((i, started, head, stream)) => {
                tracing::info!(provider = %self.route.targets[i].provider_name,
                    chars = self.text.chars().count(), "the answer continues on the next target");
                self.target = i;
                self.started = started;
                self.stream = stream;
                self.head = head.into();
                self.chars = 0;
                true
            }
            Err(_) => false,
        }
    }

    async fn next(&mut self) -> Option<Result<Chunk, ProviderError>> {
        if self.done {
            return None;
        }
        loop {
            let item = match self.head.pop_front() {
                Some(c) => Some(Ok(c)),
                None => {
                    // Its silence between chunks, and its whole answer, are bounded.
                    let t = &self.route.targets[self.target];
                    let left = t.total_timeout.saturating_sub(self.started.elapsed());
                    let (wait, what) = if left < t.idle_timeout {
                        (left, "total")
                    } else {
                        (t.idle_timeout, "idle")
                    };
                    match tokio::time::timeout(wait, self.stream.next()).await {
                        Ok(item) => item,
                        Err(_) => Some(Err(ProviderError::Timeout(what))),
                    }
                }
            };
            match item {
                Some(Ok(Chunk::Text(t))) => {
                    self.chars += t.chars().count() as u64;
                    self.text.push_str(&t);
                    return Some(Ok(Chunk::Text(t)));
                }
                Some(Ok(Chunk::ToolCall(c))) => {
                    self.called_tools = true;
                    return Some(Ok(Chunk::ToolCall(c)));
                }
                Some(Ok(finish @ Chunk::Finish { .. })) => {
                    self.note(None);
                    self.done = true;
                    return Some(Ok(finish));
                }
                Some(Ok(other)) => return Some(Ok(other)),
                Some(Err(e)) => {
                    self.note(Some(&e));
                    self.inner.failed(&self.route.targets[self.target]);
                    // Tool calls cannot be continued by another model: they end here.
                    if self.route.continue_on_failure
                        && !self.called_tools
                        && !final_for_route(&e)
                        && self.continue_elsewhere().await
                    {
                        continue;
                    }
                    self.done = true;
                    return Some(Err(e));
                }
                None => {
                    let e = ProviderError::Incomplete;
                    self.note(Some(&e));
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        // Stopped from outside (a cancel, the deadline, a timeout above): noted as such.
        if !self.done {
            let t = &self.route.targets[self.target];
            self.request.attempts.push(Attempt {
                error_code: Some("stopped".into()),
                ..attempt(t, self.started, None, self.chars)
            });
        }
    }
}

#[async_trait]
impl Provider for Router {
    fn name(&self) -> &'static str {
        self.name
    }

    fn default_model(&self) -> &str {
        &self.default_model
    }

    fn models(&self) -> Option<Vec<String>> {
        Some(self.models.clone())
    }

    fn targets(&self, model: &str) -> Vec<String> {
        self.inner.routes.get(model).map_or_else(
            || vec![model.to_owned()],
            |r| r.targets.iter().map(|t| t.model.clone()).collect(),
        )
    }

    /// Refused only when no target of the route can honour the request (a target that cannot
    /// is skipped when its turn comes).
    fn unsupported(&self, request: &CompletionRequest) -> Option<String> {
        let route = self.inner.routes.get(&request.model)?;
        let mut first = None;
        for t in &route.targets {
            let mut req = request.clone();
            req.model = t.model.clone();
            match t.provider.unsupported(&req) {
                None => return None,
                Some(p) => {
                    first.get_or_insert(p);
                }
            }
        }
        first
    }

    async fn stream(&self, request: CompletionRequest) -> Result<ChunkStream, ProviderError> {
        let route = self
            .inner
            .routes
            .get(&request.model)
            .cloned()
            .ok_or_else(|| ProviderError::Status {
                status: 404,
                body: String::new(),
                retry_after: None,
            })?;
        let (target, started, head, stream) =
            first_answer(&self.inner, &route, 0, &request).await?;
        let flow = Flow {
            inner: self.inner.clone(),
            route,
            request,
            target,
            started,
            stream,
            head: head.into(),
            text: String::new(),
            chars: 0,
            called_tools: false,
            done: false,
        };
        Ok(Box::pin(futures_util::stream::unfold(
            flow,
            |mut f| async move { f.next().await.map(|item| (item, f)) },
        )))
    }
}
