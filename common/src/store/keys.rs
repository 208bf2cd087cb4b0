//! API keys, their limits and spend, and usage reports: one implementation for both backends.
//! Every statement here takes its parameters as text and returns text columns (each cast where
//! it is used), so a backend only has to run text ([`TextRows`]); the counting itself is the
//! database's (migration V12).

use async_trait::async_trait;
use uuid::Uuid;

use super::{ApiKey, ApiKeys, KeyRecord, Spend, UsageReport};
use crate::error::StoreError;
use crate::spend::{
    GroupBy, KeyLimits, KeySpend, Period, Refusal, Reservation, UsageLine, UsageQuery,
};

/// A row of text columns (`None`: SQL null).
pub(crate) type TextRow = Vec<Option<String>>;

/// Runs a statement whose parameters and columns are all text.
#[async_trait]
pub(crate) trait TextRows: Send + Sync {
    async fn text_rows(
        &self,
        sql: &str,
        params: &[Option<String>],
    ) -> Result<Vec<TextRow>, StoreError>;
}

fn t(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}

fn opt(v: Option<impl ToString>) -> Option<String> {
    v.map(|v| v.to_string())
}

fn cell<'a>(row: &'a TextRow, i: usize, column: &'static str) -> Result<&'a str, StoreError> {
    row.get(i)
        .and_then(Option::as_deref)
        .ok_or(StoreError::Decode { column })
}

fn parsed<T: std::str::FromStr>(
    row: &TextRow,
    i: usize,
    column: &'static str,
) -> Result<T, StoreError> {
    cell(row, i, column)?
        .parse()
        .map_err(|_| StoreError::Decode { column })
}

fn opt_parsed<T: std::str::FromStr>(
    row: &TextRow,
    i: usize,
    column: &'static str,
) -> Result<Option<T>, StoreError> {
    match row.get(i).and_then(Option::as_deref) {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| StoreError::Decode { column }),
    }
}

fn time_at(
    row: &TextRow,
    i: usize,
    column: &'static str,
) -> Result<time::OffsetDateTime, StoreError> {
    time::OffsetDateTime::parse(
        cell(row, i, column)?,
        &time::format_description::well_known::Rfc3339,
    )
    .map_err(|_| StoreError::Decode { column })
}

/// A timestamp column as RFC 3339 text in UTC.
fn rfc3339(column: &str) -> String {
    format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
}

/// The limit columns of `api_keys k`, as text, in [`limits_at`]'s order.
const LIMITS: &str = "k.rpm::text, k.tpm::text, k.concurrency::text, k.budget_usd::text, \
    k.budget_tokens::text, k.period";

fn limits_at(row: &TextRow, at: usize) -> Result<KeyLimits, StoreError> {
    Ok(KeyLimits {
        rpm: opt_parsed(row, at, "rpm")?,
        tpm: opt_parsed(row, at + 1, "tpm")?,
        concurrency: opt_parsed(row, at + 2, "concurrency")?,
        budget_usd: opt_parsed(row, at + 3, "budget_usd")?,
        budget_tokens: opt_parsed(row, at + 4, "budget_tokens")?,
        period: Period::parse(cell(row, at + 5, "period")?)
            .ok_or(StoreError::Decode { column: "period" })?,
    })
}

/// A key's spend in its current period and its reservations in flight, as text, from
/// [`WITH_SPEND`] (one join, not a lookup per column), in [`spend_at`]'s order.
const SPEND: &str = "\
    (CASE WHEN s.period_start < llm_period_start(k.period, now()) THEN 0 \
          ELSE coalesce(s.spent_usd, 0) END)::text, \
    (CASE WHEN s.period_start < llm_period_start(k.period, now()) THEN 0 \
          ELSE coalesce(s.spent_tokens, 0) END)::text, \
    coalesce(s.reserved_usd, 0)::text, coalesce(s.reserved_tokens, 0)::text, \
    coalesce(s.running, 0)::text";

/// Where [`SPEND`] reads from: the keys `k` with their counters `s` (a key without limits has
/// none).
const WITH_SPEND: &str = "api_keys k LEFT JOIN key_spend s ON s.key_id = k.id";

fn spend_at(row: &TextRow, at: usize) -> Result<KeySpend, StoreError> {
    Ok(KeySpend {
        spent_usd: parsed(row, at, "spent_usd")?,
        spent_tokens: parsed(row, at + 1, "spent_tokens")?,
        reserved_usd: parsed(row, at + 2, "reserved_usd")?,
        reserved_tokens: parsed(row, at + 3, "reserved_tokens")?,
        running: parsed(row, at + 4, "running")?,
    })
}

/// The limit parameters, in the order the statements below take them.
fn limit_params(l: &KeyLimits) -> [Option<String>; 6] {
    [
        opt(l.rpm),
        opt(l.tpm),
        opt(l.concurrency),
        opt(l.budget_usd),
        opt(l.budget_tokens),
        t(l.period.as_str()),
    ]
}

#[async_trait]
impl<T: TextRows> ApiKeys for T {
    async fn key_of(&self, digest: &[u8]) -> Result<Option<KeyRecord>, StoreError> {
        let sql = format!(
            "SELECT k.id::text, k.owner, {LIMITS} FROM api_keys k \
             WHERE k.digest = decode($1::text, 'hex') AND k.revoked_at IS NULL"
        );
        let rows = self.text_rows(&sql, &[t(hex(digest))]).await?;
        rows.first()
            .map(|r| {
                Ok(KeyRecord {
                    id: parsed(r, 0, "id")?,
                    owner: cell(r, 1, "owner")?.to_owned(),
                    limits: limits_at(r, 2)?,
                })
            })
            .transpose()
    }

    async fn add_key(
        &self,
        id: Uuid,
        owner: &str,
        name: &str,
        digest: &[u8],
        limits: &KeyLimits,
    ) -> Result<(), StoreError> {
        let mut params = vec![t(id), t(owner), t(name), t(hex(digest))];
        params.extend(limit_params(limits));
        self.text_rows(
            "INSERT INTO api_keys (id, owner, name, digest, rpm, tpm, concurrency, budget_usd, \
             budget_tokens, period) \
             VALUES ($1::text::uuid, $2::text, $3::text, decode($4::text, 'hex'), \
             $5::text::int4, $6::text::int8, $7::text::int4, $8::text::numeric, \
             $9::text::int8, $10::text)",
            &params,
        )
        .await?;
        Ok(())
    }

    async fn set_limits(&self, id: Uuid, limits: &KeyLimits) -> Result<bool, StoreError> {
        let mut params = vec![t(id)];
        params.extend(limit_params(limits));
        let rows = self
            .text_rows(
                "UPDATE api_keys SET rpm = $2::text::int4, tpm = $3::text::int8, \
                 concurrency = $4::text::int4, budget_usd = $5::text::numeric, \
                 budget_tokens = $6::text::int8, period = $7::text \
                 WHERE id = $1::text::uuid AND revoked_at IS NULL RETURNING id::text",
                &params,
            )
            .await?;
        Ok(rows.len() == 1)
    }

    async fn revoke_key(&self, id: Uuid) -> Result<bool, StoreError> {
        let rows = self
            .text_rows(
                "UPDATE api_keys SET revoked_at = now() \
                 WHERE id = $1::text::uuid AND revoked_at IS NULL RETURNING id::text",
                &[t(id)],
            )
            .await?;
        Ok(rows.len() == 1)
    }

    async fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let sql = format!(
            "SELECT k.id::text, k.owner, k.name, {}, {}, {LIMITS}, {SPEND} \
             FROM {WITH_SPEND} ORDER BY k.owner, k.created_at",
            rfc3339("k.created_at"),
            rfc3339("k.revoked_at")
        );
        let rows = self.text_rows(&sql, &[]).await?;
        rows.iter()
            .map(|r| {
                Ok(ApiKey {
                    id: parsed(r, 0, "id")?,
                    owner: cell(r, 1, "owner")?.to_owned(),
                    name: cell(r, 2, "name")?.to_owned(),
                    created_at: time_at(r, 3, "created_at")?,
                    revoked_at: match r.get(4).and_then(Option::as_deref) {
                        None => None,
                        Some(_) => Some(time_at(r, 4, "revoked_at")?),
                    },
                    limits: limits_at(r, 5)?,
                    spend: spend_at(r, 11)?,
                })
            })
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[async_trait]
impl<T: TextRows> Spend for T {
    async fn reserve(&self, r: &Reservation) -> Result<Option<Refusal>, StoreError> {
        let rows = self
            .text_rows(
                "SELECT refusal, retry_after::text, message FROM llm_reserve(\
                 $1::text::uuid, $2::text::uuid, $3::text, $4::text, $5::text::int8, \
                 $6::text::int8, $7::text::numeric, $8::text::numeric, \
                 $9::text::float8 * interval '1 second', $10::text::float8 * interval '1 second')",
                &[
                    t(r.key_id),
                    t(r.turn_id),
                    t(&r.owner),
                    t(&r.model),
                    t(r.prompt_tokens),
                    t(r.output_tokens),
                    opt(r.input_price),
                    opt(r.output_price),
                    t(r.stale.as_secs_f64()),
                    t(r.lease.as_secs_f64()),
                ],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Err(StoreError::Decode { column: "refusal" });
        };
        let Some(code) = row.first().cloned().flatten() else {
            return Ok(None);
        };
        Ok(Some(Refusal {
            code,
            retry_after: opt_parsed(row, 1, "retry_after")?,
            message: cell(row, 2, "message")?.to_owned(),
        }))
    }

    async fn settle(
        &self,
        turn_id: Uuid,
        model: &str,
        prompt_tokens: i64,
        completion_tokens: i64,
        usd: f64,
    ) -> Result<(), StoreError> {
        self.text_rows(
            "SELECT llm_settle($1::text::uuid, $2::text::int8, $3::text::int8, \
             $4::text::numeric, 'turn', $5::text)::text",
            &[
                t(turn_id),
                t(prompt_tokens),
                t(completion_tokens),
                t(usd),
                t(model),
            ],
        )
        .await?;
        Ok(())
    }
}

#[async_trait]
impl<T: TextRows> UsageReport for T {
    async fn usage(
        &self,
        owner: &str,
        query: &UsageQuery,
    ) -> Result<(Vec<UsageLine>, UsageLine), StoreError> {
        let group = match query.group_by {
            GroupBy::Day => "day::text",
            GroupBy::Model => "model",
            GroupBy::Key => "key_id::text",
        };
        // The groups and, as the row GROUPING marks, their total: one read of the rollup.
        let sql = format!(
            "SELECT GROUPING({group})::text, {group}, coalesce(sum(requests), 0)::text, \
             coalesce(sum(prompt_tokens), 0)::text, coalesce(sum(completion_tokens), 0)::text, \
             coalesce(sum(cost_usd), 0)::text \
             FROM usage_daily WHERE owner = $1::text \
             AND ($2::text IS NULL OR day >= $2::text::date) \
             AND ($3::text IS NULL OR day <= $3::text::date) \
             GROUP BY GROUPING SETS (({group}), ()) ORDER BY 1, 2"
        );
        let date = |d: Option<time::Date>| d.map(|d| d.to_string());
        let rows = self
            .text_rows(&sql, &[t(owner), date(query.from), date(query.to)])
            .await?;
        let mut items = Vec::new();
        let mut total = UsageLine::default();
        for r in &rows {
            let mut line = UsageLine {
                requests: parsed(r, 2, "requests")?,
                prompt_tokens: parsed(r, 3, "prompt_tokens")?,
                completion_tokens: parsed(r, 4, "completion_tokens")?,
                cost_usd: parsed(r, 5, "cost_usd")?,
                ..UsageLine::default()
            };
            if cell(r, 0, "grouping")? == "1" {
                total = line;
                continue;
            }
            let name = r.get(1).cloned().flatten();
            match query.group_by {
                GroupBy::Day => line.day = name,
                GroupBy::Model => line.model = name,
                GroupBy::Key => {
                    line.key_id = Some(name.and_then(|k| Uuid::try_parse(&k).ok()));
                }
            }
            items.push(line);
        }
        Ok((items, total))
    }

    async fn key_spend(&self, key_id: Uuid) -> Result<Option<KeySpend>, StoreError> {
        let sql = format!("SELECT {SPEND} FROM {WITH_SPEND} WHERE k.id = $1::text::uuid");
        let rows = self.text_rows(&sql, &[t(key_id)]).await?;
        rows.first().map(|r| spend_at(r, 0)).transpose()
    }
}
