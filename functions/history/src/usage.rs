//! `GET /usage`: the caller's requests, tokens and cost by day, model or key, from the daily
//! rollup the statements that end turns keep (never a scan of the turns); and, for a caller
//! with a limited key, that key's limits, spend and what remains of its budget.

use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::routing::get;
use axum::{Json, Router};
use common::ApiError;
use common::auth::{CallerKey, Owner};
use common::error::ErrorBody;
use common::http::ValidQuery;
use common::spend::{GroupBy, KeyLimits, KeySpend, UsageLine, UsageQuery};
use common::store::UsageReport as Rollup;
use serde::{Deserialize, Serialize};

/// The `/usage` route alone, for merging into the local server.
pub fn routes(store: Arc<dyn Rollup>) -> Router {
    Router::new().route("/usage", get(usage)).with_state(store)
}

/// The query string of `GET /usage`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// The first UTC day counted: a date, or an RFC 3339 time (its UTC day); none: from the
    /// start.
    #[param(value_type = Option<String>, pattern = r"^\s*$|^\s*\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])([Tt]([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d+)?([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d))?\s*$")]
    pub from: Option<String>,
    /// The last UTC day counted (included), as `from`; none: up to now.
    #[param(value_type = Option<String>, pattern = r"^\s*$|^\s*\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])([Tt]([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d+)?([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d))?\s*$")]
    pub to: Option<String>,
    /// `day` (default), `model` (the model that answered) or `key` (the key's id).
    #[param(value_type = Option<String>, pattern = r"^(day|model|key)?$")]
    pub group_by: Option<String>,
}

/// A usage report.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageReport {
    /// One line a group, in the group's order (days oldest first).
    pub items: Vec<UsageLine>,
    /// Every line together (zeros when nothing was used).
    pub total: UsageLine,
    /// The limits and spend of the key this request used, when it has limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyUsage>,
}

/// A limited key's limits and what it has spent this period.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyUsage {
    pub id: uuid::Uuid,
    pub limits: KeyLimits,
    #[serde(flatten)]
    pub spend: KeySpend,
    /// What remains of a USD budget this period (in flight counted as spent).
    pub remaining_usd: Option<f64>,
    /// What remains of a token budget this period (in flight counted as spent).
    pub remaining_tokens: Option<i64>,
}

/// The caller's usage: requests, tokens and cost by UTC day, model or key, and the total.
/// Deleting turns does not reduce it: spent is spent.
#[utoipa::path(get, path = "/usage", tag = "usage", params(UsageParams), responses(
    (status = 200, description = "The caller's usage by the asked group, and the total",
        body = UsageReport),
    (status = 401, description = "Missing or invalid API key", body = ErrorBody),
    (status = 422, description = "A bad from, to or group_by", body = ErrorBody),
    (status = 503, description = "The database is unavailable", body = ErrorBody),
))]
pub async fn usage(
    State(store): State<Arc<dyn Rollup>>,
    Extension(owner): Extension<Owner>,
    key: Option<Extension<CallerKey>>,
    ValidQuery(params): ValidQuery<UsageParams>,
) -> Result<Json<UsageReport>, ApiError> {
    let query = UsageQuery {
        from: day("from", params.from.as_deref())?,
        to: day("to", params.to.as_deref())?,
        group_by: match params.group_by.as_deref() {
            None | Some("" | "day") => GroupBy::Day,
            Some("model") => GroupBy::Model,
            Some("key") => GroupBy::Key,
            Some(_) => return Err(ApiError::invalid("group_by must be day, model or key")),
        },
    };
    let (items, total) = store.usage(&owner.0, &query).await?;
    let key = match key.map(|k| k.0).filter(|k| k.limits.any()) {
        Some(k) => store.key_spend(k.id).await?.map(|spend| KeyUsage {
            id: k.id,
            remaining_usd: k
                .limits
                .budget_usd
                .map(|b| (b - spend.spent_usd - spend.reserved_usd).max(0.0)),
            remaining_tokens: k
                .limits
                .budget_tokens
                .map(|b| (b - spend.spent_tokens - spend.reserved_tokens).max(0)),
            limits: k.limits,
            spend,
        }),
        None => None,
    };
    Ok(Json(UsageReport { items, total, key }))
}

/// A date or an RFC 3339 time, as its UTC day; empty is none.
fn day(name: &str, raw: Option<&str>) -> Result<Option<time::Date>, ApiError> {
    Ok(common::api::parse_time(name, raw)?.map(|t| t.to_offset(time::UtcOffset::UTC).date()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_and_bad_ones_are_named() {
        let d = day("from", Some("2025-01-31T23:30:00-02:00"))
            .unwrap()
            .unwrap();
        assert_eq!(d.to_string(), "2025-02-01");
        assert_eq!(day("to", Some(" ")).unwrap(), None);
        let e = day("to", Some("yesterday")).unwrap_err();
        assert!(e.to_string().starts_with("to must be"), "{e}");
    }
}
