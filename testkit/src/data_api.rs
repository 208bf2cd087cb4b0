//! A local RDS Data API endpoint backed by PostgreSQL, for tests: the SDK (`endpoint_url`,
//! static credentials) talks to it over HTTP with the service's JSON (restJson1):
//! `POST /Execute`, `/BeginTransaction`, `/CommitTransaction`, `/RollbackTransaction`.
//!
//! It is as strict as the service where the backend could go wrong:
//! - a string parameter without a type hint is text (the service sends varchar), so a
//!   missing `UUID`/`TIMESTAMP` hint or cast fails here as it would there;
//! - a response over 1 MiB is refused, as the service refuses it;
//! - the session time zone is not UTC, so SQL that leans on the session's zone shows it;
//! - requests must be SigV4-signed;
//! - results are the types the backend reads (text, numbers, booleans, bytes, JSON as text);
//!   a `timestamptz` comes back as an error, since the backend formats its timestamps itself.
//!
//! Named parameters (`:name`) become positional ones; type hints become casts.

// Errors here are the HTTP answers themselves; their size does not matter in a test server.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::TryStreamExt;
use serde_json::{Value, json};
use tokio_postgres::types::{ToSql, Type};

/// The response size the service allows.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// A running endpoint; stops when dropped.
pub struct DataApi {
    pub endpoint: String,
    server: tokio::task::JoinHandle<()>,
    calls: Arc<std::sync::atomic::AtomicUsize>,
    ddl_cut: Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for DataApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl DataApi {
    /// Serves the databases of the server at `admin_url` (the request's `database` picks one).
    pub async fn start(admin_url: &str) -> Self {
        let state = Arc::new(Inner {
            admin_url: admin_url.to_owned(),
            pools: Mutex::new(HashMap::new()),
            transactions: Mutex::new(HashMap::new()),
            calls: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            ddl_cut: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        });
        let calls = state.calls.clone();
        let ddl_cut = state.ddl_cut.clone();
        let app = Router::new()
            .route("/Execute", post(execute))
            .route("/BeginTransaction", post(begin))
            .route("/CommitTransaction", post(commit))
            .route("/RollbackTransaction", post(rollback))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind the Data API endpoint");
        let addr = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            endpoint: format!("http://{addr}"),
            server,
            calls,
            ddl_cut,
        }
    }

    /// How many schema statements (CREATE, ALTER, DROP) came without `continueAfterTimeout`:
    /// the service cuts those at 45 s, and a long one would leave a migration half done.
    pub fn ddl_without_continue(&self) -> usize {
        self.ddl_cut.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many Execute calls it has answered.
    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}

struct Inner {
    admin_url: String,
    pools: Mutex<HashMap<String, Pool>>,
    transactions: Mutex<HashMap<String, deadpool_postgres::Object>>,
    calls: Arc<std::sync::atomic::AtomicUsize>,
    ddl_cut: Arc<std::sync::atomic::AtomicUsize>,
}

impl Inner {
    fn pool(&self, database: &str) -> Pool {
        let mut pools = self.pools.lock().unwrap();
        pools
            .entry(database.to_owned())
            .or_insert_with(|| {
                let url = crate::replace_db_name(&self.admin_url, database);
                let mut config: tokio_postgres::Config = url.parse().expect("database url");
                // Not UTC, on purpose (see the module documentation).
                config.options("-c TimeZone=Pacific/Chatham");
                let manager = Manager::from_config(
                    config,
                    tokio_postgres::NoTls,
                    ManagerConfig {
                        recycling_method: RecyclingMethod::Fast,
                    },
                );
                Pool::builder(manager).max_size(8).build().expect("pool")
            })
            .clone()
    }
}

/// A service error: status, the `x-amzn-errortype` code and a message.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        [("x-amzn-errortype", code.to_owned())],
        Json(json!({ "message": message.into() })),
    )
        .into_response()
}

fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "BadRequestException", message)
}

fn signed(headers: &HeaderMap) -> Result<(), Response> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth.starts_with("AWS4-HMAC-SHA256 ") {
        Ok(())
    } else {
        Err(error(
            StatusCode::FORBIDDEN,
            "ForbiddenException",
            "requests must be signed with SigV4",
        ))
    }
}

fn required<'a>(body: &'a Value, name: &str) -> Result<&'a str, Response> {
    body.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad_request(format!("{name} is required")))
}

async fn begin(
    State(s): State<Arc<Inner>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let run = async {
        signed(&headers)?;
        required(&body, "resourceArn")?;
        required(&body, "secretArn")?;
        let database = required(&body, "database")?;
        let client = s.pool(database).get().await.map_err(|e| {
            error(
                StatusCode::GATEWAY_TIMEOUT,
                "DatabaseUnavailableException",
                e.to_string(),
            )
        })?;
        client
            .batch_execute("BEGIN")
            .await
            .map_err(|e| database_error(&e))?;
        let id = B64.encode(uuid::Uuid::now_v7().as_bytes());
        s.transactions.lock().unwrap().insert(id.clone(), client);
        Ok::<_, Response>(Json(json!({ "transactionId": id })).into_response())
    };
    run.await.unwrap_or_else(|e| e)
}

async fn end(s: &Inner, headers: &HeaderMap, body: &Value, sql: &str) -> Result<(), Response> {
    signed(headers)?;
    let id = required(body, "transactionId")?;
    let client = s.transactions.lock().unwrap().remove(id).ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            "TransactionNotFoundException",
            format!("Transaction {id} is not found"),
        )
    })?;
    client
        .batch_execute(sql)
        .await
        .map_err(|e| database_error(&e))
}

async fn commit(
    State(s): State<Arc<Inner>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    match end(&s, &headers, &body, "COMMIT").await {
        Ok(()) => Json(json!({ "transactionStatus": "Transaction Committed" })).into_response(),
        Err(e) => e,
    }
}

async fn rollback(
    State(s): State<Arc<Inner>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    match end(&s, &headers, &body, "ROLLBACK").await {
        Ok(()) => Json(json!({ "transactionStatus": "Rollback Complete" })).into_response(),
        Err(e) => e,
    }
}

fn database_error(e: &tokio_postgres::Error) -> Response {
    let message = match e.as_db_error() {
        Some(db) => format!("ERROR: {}", db.message()),
        None => e.to_string(),
    };
    error(StatusCode::BAD_REQUEST, "DatabaseErrorException", message)
}

async fn execute(
    State(s): State<Arc<Inner>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    s.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let run = async {
        signed(&headers)?;
        required(&body, "resourceArn")?;
        required(&body, "secretArn")?;
        let sql = required(&body, "sql")?;
        let word = sql.split_whitespace().next().unwrap_or("");
        let ddl = ["CREATE", "ALTER", "DROP"]
            .iter()
            .any(|w| w.eq_ignore_ascii_case(word));
        let continues = body.get("continueAfterTimeout").and_then(Value::as_bool) == Some(true);
        if ddl && !continues {
            s.ddl_cut.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        let params = body
            .get("parameters")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let (sql, values) = bind(sql, &params)?;
        let transaction = body.get("transactionId").and_then(Value::as_str);
        let client = match transaction {
            Some(id) => s.transactions.lock().unwrap().remove(id).ok_or_else(|| {
                error(
                    StatusCode::NOT_FOUND,
                    "TransactionNotFoundException",
                    format!("Transaction {id} is not found"),
                )
            })?,
            None => {
                let database = required(&body, "database")?;
                s.pool(database).get().await.map_err(|e| {
                    error(
                        StatusCode::GATEWAY_TIMEOUT,
                        "DatabaseUnavailableException",
                        e.to_string(),
                    )
                })?
            }
        };
        let result = run_sql(&client, &sql, &values).await;
        if let Some(id) = transaction {
            s.transactions.lock().unwrap().insert(id.to_owned(), client);
        }
        let answer = result?;
        let bytes = serde_json::to_vec(&answer).unwrap_or_default();
        if bytes.len() > MAX_RESPONSE_BYTES {
            return Err(bad_request(
                "Database returned more than the allowed response size limit",
            ));
        }
        Ok::<_, Response>(
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                bytes,
            )
                .into_response(),
        )
    };
    run.await.unwrap_or_else(|e| e)
}

/// A bound parameter value.
enum Bound {
    Text(String),
    Long(i64),
    Double(f64),
    Bool(bool),
    Bytes(Vec<u8>),
}

impl Bound {
    fn typed(&self) -> (&(dyn ToSql + Sync), Type) {
        match self {
            Bound::Text(v) => (v, Type::TEXT),
            Bound::Long(v) => (v, Type::INT8),
            Bound::Double(v) => (v, Type::FLOAT8),
            Bound::Bool(v) => (v, Type::BOOL),
            Bound::Bytes(v) => (v, Type::BYTEA),
        }
    }
}

/// Rewrites `:name` parameters to `$n` (type hints as casts, nulls inline) and decodes values.
fn bind(sql: &str, params: &[Value]) -> Result<(String, Vec<Bound>), Response> {
    let by_name: HashMap<&str, &Value> = params
        .iter()
        .filter_map(|p| Some((p.get("name")?.as_str()?, p)))
        .collect();
    let mut out = String::with_capacity(sql.len());
    let mut values: Vec<Bound> = Vec::new();
    let mut positions: HashMap<String, String> = HashMap::new();
    let chars: Vec<char> = sql.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // A string literal, copied as it is.
            out.push(c);
            i += 1;
            while i < chars.len() {
                out.push(chars[i]);
                i += 1;
                if chars[i - 1] == '\'' {
                    break;
                }
            }
            continue;
        }
        if c == ':' && i + 1 < chars.len() && chars[i + 1] == ':' {
            out.push_str("::");
            i += 2;
            continue;
        }
        if c == ':'
            && i + 1 < chars.len()
            && (chars[i + 1].is_ascii_alphabetic() || chars[i + 1] == '_')
        {
            let start = i + 1;
            let mut end = start;
            while end < chars.len() && (chars[end].is_ascii_alphanumeric() || chars[end] == '_') {
                end += 1;
            }
            let name: String = chars[start..end].iter().collect();
            if let Some(p) = positions.get(&name) {
                out.push_str(p);
            } else {
                let p = by_name.get(name.as_str()).ok_or_else(|| {
                    bad_request(format!("No value specified for parameter {name}"))
                })?;
                let placeholder = placeholder(p, &mut values)?;
                out.push_str(&placeholder);
                positions.insert(name, placeholder);
            }
            i = end;
            continue;
        }
        out.push(c);
        i += 1;
    }
    Ok((out, values))
}

fn placeholder(p: &Value, values: &mut Vec<Bound>) -> Result<String, Response> {
    let value = p
        .get("value")
        .and_then(Value::as_object)
        .ok_or_else(|| bad_request("parameter without a value"))?;
    let hint = match p.get("typeHint").and_then(Value::as_str) {
        None => None,
        Some("UUID") => Some("uuid"),
        Some("TIMESTAMP") => Some("timestamp"),
        Some("DATE") => Some("date"),
        Some("TIME") => Some("time"),
        Some("DECIMAL") => Some("numeric"),
        Some("JSON") => Some("json"),
        Some(other) => return Err(bad_request(format!("unknown typeHint {other}"))),
    };
    let (kind, v) = value
        .iter()
        .next()
        .ok_or_else(|| bad_request("empty parameter value"))?;
    if kind == "isNull" {
        return Ok(match hint {
            Some(t) => format!("CAST(NULL AS {t})"),
            None => "NULL".into(),
        });
    }
    let bound = match (kind.as_str(), v) {
        ("stringValue", Value::String(s)) => Bound::Text(s.clone()),
        ("longValue", v) if v.is_i64() => Bound::Long(v.as_i64().unwrap_or_default()),
        ("doubleValue", v) if v.is_number() => Bound::Double(v.as_f64().unwrap_or_default()),
        ("booleanValue", Value::Bool(b)) => Bound::Bool(*b),
        ("blobValue", Value::String(s)) => Bound::Bytes(
            B64.decode(s)
                .map_err(|_| bad_request("blobValue is not base64"))?,
        ),
        (other, _) => return Err(bad_request(format!("unsupported value {other}"))),
    };
    if hint.is_some() && !matches!(bound, Bound::Text(_)) {
        return Err(bad_request("typeHint applies to stringValue only"));
    }
    values.push(bound);
    let n = values.len();
    Ok(match hint {
        Some(t) => format!("CAST(${n} AS {t})"),
        None => format!("${n}"),
    })
}

async fn run_sql(
    client: &tokio_postgres::Client,
    sql: &str,
    values: &[Bound],
) -> Result<Value, Response> {
    let typed: Vec<(&(dyn ToSql + Sync), Type)> = values.iter().map(Bound::typed).collect();
    let stream = client
        .query_typed_raw(sql, typed)
        .await
        .map_err(|e| database_error(&e))?;
    futures_util::pin_mut!(stream);
    let mut rows = Vec::new();
    while let Some(row) = stream.try_next().await.map_err(|e| database_error(&e))? {
        rows.push(row);
    }
    let affected = stream.rows_affected().unwrap_or(0);
    let mut records = Vec::with_capacity(rows.len());
    let mut has_columns = false;
    for row in &rows {
        has_columns = true;
        let mut record = Vec::with_capacity(row.len());
        for (i, column) in row.columns().iter().enumerate() {
            record.push(field(row, i, column.type_())?);
        }
        records.push(Value::Array(record));
    }
    Ok(json!({
        "records": records,
        "numberOfRecordsUpdated": if has_columns { 0 } else { affected },
    }))
}

/// One result value in the service's union form.
fn field(row: &tokio_postgres::Row, i: usize, t: &Type) -> Result<Value, Response> {
    fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
        row: &'a tokio_postgres::Row,
        i: usize,
    ) -> Result<Option<T>, Response> {
        row.try_get::<_, Option<T>>(i).map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                "UnsupportedResultException",
                e.to_string(),
            )
        })
    }
    let null = json!({ "isNull": true });
    let v = match *t {
        Type::BOOL => get::<bool>(row, i)?.map(|v| json!({ "booleanValue": v })),
        Type::INT2 => get::<i16>(row, i)?.map(|v| json!({ "longValue": v })),
        Type::INT4 => get::<i32>(row, i)?.map(|v| json!({ "longValue": v })),
        Type::INT8 => get::<i64>(row, i)?.map(|v| json!({ "longValue": v })),
        Type::FLOAT4 => get::<f32>(row, i)?.map(|v| json!({ "doubleValue": v })),
        Type::FLOAT8 => get::<f64>(row, i)?.map(|v| json!({ "doubleValue": v })),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            get::<String>(row, i)?.map(|v| json!({ "stringValue": v }))
        }
        Type::UUID => get::<uuid::Uuid>(row, i)?.map(|v| json!({ "stringValue": v.to_string() })),
        Type::JSON | Type::JSONB => {
            get::<Value>(row, i)?.map(|v| json!({ "stringValue": v.to_string() }))
        }
        Type::BYTEA => get::<Vec<u8>>(row, i)?.map(|v| json!({ "blobValue": B64.encode(v) })),
        Type::VOID => None,
        ref other => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "UnsupportedResultException",
                format!("The result contains the unsupported data type {other}"),
            ));
        }
    };
    Ok(v.unwrap_or(null))
}
