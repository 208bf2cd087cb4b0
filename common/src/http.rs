//! HTTP pieces every function shares: JSON errors for rejected input, `/health`, fallbacks.

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, error_response};
use crate::store::HealthCheck;

/// Like axum's `Query`, but a malformed query string is a 422 with the JSON error body.
pub struct ValidQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ValidQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Self(v))
            .map_err(|_| ApiError::invalid("the query string is not valid"))
    }
}

/// Like axum's `Path`, but a segment that does not decode (invalid UTF-8 after percent-decoding)
/// is a 422 with the JSON error body.
pub struct ValidPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ValidPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Self(v))
            .map_err(|_| ApiError::invalid("the path is not valid"))
    }
}

/// The body of `GET /health`.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` or `degraded`.
    pub status: String,
    /// `ok` or `unavailable`.
    pub database: String,
}

/// `GET /health`: 200 when the database answers, 503 when it does not.
pub fn health_router(db: Arc<dyn HealthCheck>) -> Router {
    Router::new().route("/health", get(health)).with_state(db)
}

/// Whether the service and its database answer. Needs no key.
#[utoipa::path(get, path = "/health", tag = "health", security(()), responses(
    (status = 200, description = "The database answers", body = Health),
    (status = 503, description = "The database does not answer", body = Health),
))]
pub async fn health(State(db): State<Arc<dyn HealthCheck>>) -> Response {
    let (status, body) = match db.ping().await {
        Ok(()) => (StatusCode::OK, Health::new("ok", "ok")),
        Err(e) => {
            tracing::warn!(error = %crate::error::error_chain(&e), "health check: database unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Health::new("degraded", "unavailable"),
            )
        }
    };
    (status, Json(body)).into_response()
}

impl Health {
    fn new(status: &str, database: &str) -> Self {
        Self {
            status: status.to_owned(),
            database: database.to_owned(),
        }
    }
}

/// Puts `router` behind the API key check (see [`crate::auth`]).
pub fn protect(router: Router, auth: crate::auth::Auth) -> Router {
    router.layer(axum::middleware::from_fn_with_state(
        auth,
        crate::auth::require_key,
    ))
}

/// Adds the JSON 404 and 405 answers every router gives for paths and methods it does not know,
/// and the request log line (see [`crate::telemetry::request_log`]) around everything.
pub fn with_fallbacks(router: Router) -> Router {
    let router = router
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this method is not allowed on this path",
            )
        });
    router
        .layer(axum::middleware::from_fn(within_deadline))
        .layer(axum::middleware::from_fn(openai_errors))
        .layer(axum::middleware::from_fn(crate::telemetry::request_log))
}

/// Under `/v1/`, the OpenAI-compatible API: every error takes OpenAI's shape
/// (`{"error": {"message", "type", "param", "code"}}`), the key check's 401 and the 404/405 of
/// unknown paths included, so OpenAI's SDKs raise their typed errors; a request that fails
/// validation is a 400, as OpenAI answers it, not a 422.
pub async fn openai_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let openai = request.uri().path().starts_with("/v1/") || request.uri().path() == "/v1";
    let response = next.run(request).await;
    if !openai || !(response.status().is_client_error() || response.status().is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return (
            parts.status,
            Json(crate::error::OpenAiError::new(
                crate::error::OpenAiError::kind_for(parts.status.as_u16()),
                "internal_error",
                "the error could not be read",
                None,
            )),
        )
            .into_response();
    };
    let already = serde_json::from_slice::<serde_json::Value>(&bytes)
        .is_ok_and(|v| v["error"]["type"].is_string());
    let ours = serde_json::from_slice::<crate::error::ErrorBody>(&bytes);
    let (false, Ok(ours)) = (already, ours) else {
        // Already OpenAI's shape (or not JSON): as it is.
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    if parts.status == StatusCode::UNPROCESSABLE_ENTITY {
        parts.status = StatusCode::BAD_REQUEST;
    }
    let theirs = crate::error::OpenAiError::from_body(parts.status.as_u16(), &ours);
    let body = serde_json::to_vec(&theirs).unwrap_or_default();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// The deadline of the Lambda invocation a request belongs to (none outside Lambda).
/// Whether the request came through the Lambda runtime (whose process may be frozen as soon as
/// the response is complete).
pub fn in_lambda(extensions: &axum::http::Extensions) -> bool {
    extensions.get::<lambda_http::Context>().is_some()
}

pub fn lambda_deadline(extensions: &axum::http::Extensions) -> Option<std::time::SystemTime> {
    extensions
        .get::<lambda_http::Context>()
        .map(lambda_http::Context::deadline)
        .filter(|d| {
            // `cargo lambda watch` sends a duration (600,000 ms) where Lambda sends a time since
            // the epoch: a "deadline" before 2001 is no deadline.
            d.duration_since(std::time::UNIX_EPOCH)
                .is_ok_and(|t| t > std::time::Duration::from_secs(978_307_200))
        })
}

/// How long before a Lambda invocation's deadline a request that is still being handled gets
/// its 503 instead: Lambda would otherwise end it with a bare timeout error.
pub const DEADLINE_MARGIN: std::time::Duration = std::time::Duration::from_millis(500);

/// In Lambda, answers 503 `timeout` when handling a request runs into the invocation's
/// deadline (less [`DEADLINE_MARGIN`]). A streaming response is not affected once its headers
/// are out: the stream bounds itself. Outside Lambda it does nothing.
pub async fn within_deadline(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(deadline) = lambda_deadline(request.extensions()) else {
        return next.run(request).await;
    };
    let left = deadline
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default()
        .saturating_sub(DEADLINE_MARGIN);
    match tokio::time::timeout(left, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::error!("the request ran into the Lambda deadline");
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "the request could not be answered in time; try again",
            )
        }
    }
}

/// A connection the service can close from the outside: when a client stops reading and falls
/// too far behind its stream, the stream calls [`ConnHandle::close`] and the connection ends at
/// once, even though the server is blocked writing to it (nothing else would wake it).
pub struct Conn {
    io: tokio::net::TcpStream,
    handle: ConnHandle,
    /// The JSON error answer that replaces the HTTP server's own bodiless one, still to be
    /// written (see [`json_error_answer`]).
    pending: Vec<u8>,
}

/// The HTTP server (hyper) answers a request it cannot parse itself, before any router sees it
/// (a control byte in the request line: 400; a URI longer than 64 KB: 414; headers too large:
/// 431), with an empty body. This service's answers never pair an error status with an empty
/// body, so such a head is the server's own, and becomes the same status with the JSON error
/// body every other error has. `None` for anything else.
fn json_error_answer(head: &[u8]) -> Option<Vec<u8>> {
    // A cheap look first: this sees every write of every response.
    let error_head = (head.starts_with(b"HTTP/1.1 4") || head.starts_with(b"HTTP/1.1 5"))
        && head.len() < 1024
        && head.ends_with(b"\r\n\r\n");
    if !error_head {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let rest = text.strip_prefix("HTTP/1.1 ")?;
    let (status_line, headers) = rest.split_once("\r\n")?;
    let code: u16 = status_line.get(..3)?.parse().ok()?;
    let bodiless = headers
        .split("\r\n")
        .any(|h| h.eq_ignore_ascii_case("content-length: 0"));
    if !(400..600).contains(&code) || !bodiless {
        return None;
    }
    let (error, message) = match code {
        414 => ("uri_too_long", "the request's URI is too long"),
        431 => ("headers_too_large", "the request's headers are too large"),
        400 => ("bad_request", "the request could not be read as HTTP"),
        _ => ("bad_request", "the request could not be served"),
    };
    let body = format!(r#"{{"error":{{"code":"{error}","message":"{message}"}}}}"#);
    Some(
        format!(
            "HTTP/1.1 {status_line}\r\ncontent-type: application/json\r\nconnection: close\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl Conn {
    /// Writes what is left of a replaced answer; ready once all of it is out.
    fn drain_pending(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use tokio::io::AsyncWrite as _;
        while !self.pending.is_empty() {
            match std::pin::Pin::new(&mut self.io).poll_write(cx, &self.pending) {
                std::task::Poll::Ready(Ok(0)) => {
                    return std::task::Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                std::task::Poll::Ready(Ok(n)) => {
                    self.pending.drain(..n);
                }
                other => return other.map(|r| r.map(drop)),
            }
        }
        std::task::Poll::Ready(Ok(()))
    }
}

/// The handle of one [`Conn`], given to every request on it (as `ConnectInfo<ConnHandle>`).
#[derive(Clone, Default)]
pub struct ConnHandle(Arc<CloseState>);

#[derive(Default)]
struct CloseState {
    closed: std::sync::atomic::AtomicBool,
    waker: futures_util::task::AtomicWaker,
}

impl ConnHandle {
    /// Closes the connection: its next read or write fails, and the server drops it.
    pub fn close(&self) {
        self.0
            .closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.0.waker.wake();
    }

    fn check(&self, cx: &std::task::Context<'_>) -> std::io::Result<()> {
        self.0.waker.register(cx.waker());
        if self.0.closed.load(std::sync::atomic::Ordering::SeqCst) {
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "closed by the service",
            ))
        } else {
            Ok(())
        }
    }
}

macro_rules! checked {
    ($self:ident, $cx:ident, $call:expr) => {{
        if let Err(e) = $self.handle.check($cx) {
            return std::task::Poll::Ready(Err(e));
        }
        $call
    }};
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        checked!(
            self,
            cx,
            std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
        )
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if let Err(e) = self.handle.check(cx) {
            return std::task::Poll::Ready(Err(e));
        }
        std::task::ready!(self.drain_pending(cx))?;
        if let Some(answer) = json_error_answer(buf) {
            self.pending = answer;
            // Taken whole; what is left goes out on the next write, flush or shutdown.
            let _ = self.drain_pending(cx);
            return std::task::Poll::Ready(Ok(buf.len()));
        }
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if let Err(e) = self.handle.check(cx) {
            return std::task::Poll::Ready(Err(e));
        }
        std::task::ready!(self.drain_pending(cx))?;
        // An error answer of the server's own is a head alone, in one piece or a few.
        if bufs
            .first()
            .is_some_and(|b| b.starts_with(b"HTTP/1.1 4") || b.starts_with(b"HTTP/1.1 5"))
        {
            let whole: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            if let Some(answer) = json_error_answer(&whole) {
                self.pending = answer;
                let _ = self.drain_pending(cx);
                return std::task::Poll::Ready(Ok(whole.len()));
            }
        }
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Err(e) = self.handle.check(cx) {
            return std::task::Poll::Ready(Err(e));
        }
        std::task::ready!(self.drain_pending(cx))?;
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::ready!(self.drain_pending(cx))?;
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A TCP listener whose connections send small writes at once (`TCP_NODELAY`: without it an SSE
/// event written right after another waits for the client's delayed ACK, about 40 ms) and can
/// be closed by the service ([`ConnHandle`]).
pub struct Listener(pub tokio::net::TcpListener);

impl axum::serve::Listener for Listener {
    type Io = Conn;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((io, addr)) => {
                    if let Err(e) = io.set_nodelay(true) {
                        tracing::debug!(error = %e, "could not set TCP_NODELAY");
                    }
                    let handle = ConnHandle::default();
                    return (
                        Conn {
                            io,
                            handle,
                            pending: Vec::new(),
                        },
                        addr,
                    );
                }
                // Out of file descriptors or a connection reset before it was accepted: wait a
                // moment rather than spin.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Listener>>
    for ConnHandle
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, Listener>) -> Self {
        stream.io().handle.clone()
    }
}

/// Serves `router` on `listener` with [`Listener`]'s connections (each request carries its
/// connection's [`ConnHandle`]).
pub fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
) -> axum::serve::Serve<
    Listener,
    axum::extract::connect_info::IntoMakeServiceWithConnectInfo<Router, ConnHandle>,
    axum::middleware::AddExtension<Router, axum::extract::ConnectInfo<ConnHandle>>,
> {
    axum::serve(
        Listener(listener),
        router.into_make_service_with_connect_info::<ConnHandle>(),
    )
}

#[cfg(test)]
mod tests {
    use super::json_error_answer;

    #[test]
    fn the_servers_own_bodiless_errors_get_the_json_body() {
        let hyper = b"HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\n\
            date: Sat, 05 Dec 2026 11:19:01 GMT\r\n\r\n";
        let answer = String::from_utf8(json_error_answer(hyper).unwrap()).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "uri_too_long");
        // Anything with a body, or not an error, passes as it is.
        assert!(
            json_error_answer(b"HTTP/1.1 404 Not Found\r\ncontent-length: 56\r\n\r\n").is_none()
        );
        assert!(
            json_error_answer(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n").is_none()
        );
        assert!(json_error_answer(b"data: {}\n\n").is_none());
    }
}
