//! Reading conversations within the Data API's 1 MiB response limit, in as few calls as the
//! text allows. The first call returns each text whole when its JSON form fits its share of the
//! budget (the budget divided over the rows and text columns asked for), else nothing but its
//! lengths; the texts left out are then read whole, as many per call as fit the budget, and a
//! text larger than a whole call in pieces. A look-ahead row (the one that only tells whether
//! another page follows) is never completed.

use std::collections::HashMap;

use aws_sdk_rdsdata::types::{Field, SqlParameter};
use uuid::Uuid;

use super::DataApiStore;
use super::fields::{Record, decode, long_at, string_at};
use super::params::{long, utc_text, uuid};
use crate::domain::{Conversation, now_micros};
use crate::error::StoreError;
use crate::store::sql::RESPONSE;

/// The JSON bytes of text one call may return, all rows and columns together: the 1 MiB limit
/// less room for everything else in the response.
pub const TEXT_BUDGET_BYTES: i64 = 900 * 1024;

/// The characters of one piece of a text too large for one call: at most 6 bytes each once
/// JSON-escaped (`\u0001`), so a piece always fits the budget.
pub const PIECE_CHARS: i64 = TEXT_BUDGET_BYTES / 6;

/// The text columns, which may be long: their name and the expression of their text (`c` is
/// the row). All but `prompt` and `response` may be null.
const TEXTS: [(&str, &str); 6] = [
    ("prompt", "c.prompt"),
    ("response", RESPONSE),
    ("system", "c.system"),
    ("messages", "c.messages::text"),
    ("tool_calls", "c.tool_calls::text"),
    ("prompt_parts", "c.prompt_parts::text"),
];

/// The columns of a conversation as the first call reads them, from `conversations c`: every
/// value in a form the backend decodes itself (text, numbers), each text column whole when its
/// JSON form is at most `:cell` bytes (else null), followed by its JSON and character lengths.
pub(super) fn columns() -> String {
    columns_with(RESPONSE)
}

/// [`columns`] with the `response` column the value of `response` (`''`: left out).
pub(super) fn columns_with(response: &str) -> String {
    columns_of(response, "c.messages::text")
}

/// The columns a continuation reads of each turn on its chain: all but a `/v1` call's earlier
/// messages, which the context does not use.
pub(super) fn chain_columns() -> String {
    columns_of(RESPONSE, "NULL::text")
}

/// [`columns_with`], `messages` the value of `messages`.
fn columns_of(response: &str, messages: &str) -> String {
    let mut out: Vec<String> = [
        "c.id::text AS id",
        "c.owner",
        "c.status",
        "c.error",
        "c.provider",
        "c.model",
        "c.prompt_tokens",
        "c.completion_tokens",
        "c.total_tokens",
        "c.flags::text AS flags",
        "c.ttfb_ms",
        "c.duration_ms",
        "c.finish_reason",
        "c.thread_id::text AS thread_id",
        "c.previous_id::text AS previous_id",
        "c.context_turns",
        "c.tools::text AS tools",
        "c.attempts::text AS attempts",
        "c.cost_usd::text AS cost_usd",
        "c.key_id::text AS key_id",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    out.push(format!("{} AS created_at", utc_text("c.created_at")));
    out.push(format!("{} AS updated_at", utc_text("c.updated_at")));
    out.push(format!("{} AS heartbeat_at", utc_text("c.heartbeat_at")));
    for (name, expr) in TEXTS {
        let expr = match name {
            "response" => response,
            "messages" => messages,
            _ => expr,
        };
        out.push(format!(
            "CASE WHEN octet_length(to_json({expr})::text) <= CAST(:cell AS int8) \
             THEN {expr} END AS {name}"
        ));
        out.push(format!(
            "octet_length(to_json({expr})::text) AS {name}_json"
        ));
        out.push(format!("char_length({expr}) AS {name}_chars"));
    }
    out.join(", ")
}

/// The names of [`columns`], in order, for [`Record`].
pub(super) fn column_names() -> Vec<&'static str> {
    let mut names = vec![
        "id",
        "owner",
        "status",
        "error",
        "provider",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "flags",
        "ttfb_ms",
        "duration_ms",
        "finish_reason",
        "thread_id",
        "previous_id",
        "context_turns",
        "tools",
        "attempts",
        "cost_usd",
        "key_id",
        "created_at",
        "updated_at",
        "heartbeat_at",
    ];
    for (name, _) in TEXTS {
        let [json, chars] = match name {
            "prompt" => ["prompt_json", "prompt_chars"],
            "response" => ["response_json", "response_chars"],
            "system" => ["system_json", "system_chars"],
            "messages" => ["messages_json", "messages_chars"],
            "tool_calls" => ["tool_calls_json", "tool_calls_chars"],
            _ => ["prompt_parts_json", "prompt_parts_chars"],
        };
        names.extend([name, json, chars]);
    }
    names
}

/// One text the first call left out.
struct Missing {
    row: usize,
    column: usize,
    json: i64,
}

impl DataApiStore {
    /// The first call: runs `sql` (which selects [`columns`] first) for at most `rows` rows, each
    /// text whole when it fits its share of the budget.
    pub(super) async fn first_call(
        &self,
        sql: &str,
        mut params: Vec<SqlParameter>,
        rows: i64,
    ) -> Result<Vec<Vec<Field>>, StoreError> {
        let cell = TEXT_BUDGET_BYTES / (rows.max(1) * TEXTS.len() as i64);
        params.push(long("cell", cell));
        Ok(self
            .exec(sql, params, None)
            .await?
            .records
            .unwrap_or_default())
    }

    /// The conversations of the first `keep` records of a first call (which selected
    /// [`columns`], then `extra_names`), their text complete, each with `extra(record)`.
    pub(super) async fn conversations<T>(
        &self,
        records: &[Vec<Field>],
        keep: usize,
        extra_names: &[&'static str],
        extra: impl Fn(&Record<'_>) -> Result<T, StoreError>,
    ) -> Result<Vec<(Conversation, T)>, StoreError> {
        let mut names = column_names();
        names.extend_from_slice(extra_names);
        let mut result = Vec::with_capacity(keep.min(records.len()));
        let mut missing = Vec::new();
        for (row, fields) in records.iter().take(keep).enumerate() {
            let record = Record::new(fields, &names);
            let mut c = decode(&record)?;
            for (column, (name, _)) in TEXTS.iter().enumerate() {
                let json_len = format!("{name}_json");
                if !record.is_null(name)? {
                    set_text(&mut c, column, string_at(&record, name)?)?;
                } else if !record.is_null(&json_len)? {
                    // Not null, only too long for this call.
                    let json = long_at(&record, &json_len)?;
                    missing.push(Missing { row, column, json });
                }
            }
            result.push((c, extra(&record)?));
        }
        self.complete(&mut result, missing).await?;
        let now = now_micros();
        for (c, _) in &mut result {
            c.settle_in_place(self.stale_after, self.heartbeat_stale, now);
        }
        Ok(result)
    }

    /// [`DataApiStore::first_call`] then [`DataApiStore::conversations`] of its first `keep`
    /// rows; also how many rows the first call returned.
    pub(super) async fn read<T>(
        &self,
        sql: &str,
        params: Vec<SqlParameter>,
        rows: i64,
        keep: usize,
        extra_names: &[&'static str],
        extra: impl Fn(&Record<'_>) -> Result<T, StoreError>,
    ) -> Result<(Vec<(Conversation, T)>, usize), StoreError> {
        let records = self.first_call(sql, params, rows).await?;
        let read = self
            .conversations(&records, keep, extra_names, extra)
            .await?;
        Ok((read, records.len()))
    }

    /// Reads the texts the first call left out: whole, as many per call as fit the budget; a
    /// text larger than the budget in pieces.
    async fn complete<T>(
        &self,
        rows: &mut [(Conversation, T)],
        missing: Vec<Missing>,
    ) -> Result<(), StoreError> {
        let (giants, mut whole): (Vec<_>, Vec<_>) = missing
            .into_iter()
            .partition(|m| m.json > TEXT_BUDGET_BYTES);
        for m in giants {
            let id = rows[m.row].0.id;
            let text = self.read_in_pieces(id, m.column).await?;
            set_text(&mut rows[m.row].0, m.column, text)?;
        }
        whole.sort_by_key(|m| m.json);
        let mut batch: Vec<Missing> = Vec::new();
        let mut used = 0;
        for m in whole {
            if used + m.json > TEXT_BUDGET_BYTES && !batch.is_empty() {
                self.read_batch(rows, std::mem::take(&mut batch)).await?;
                used = 0;
            }
            used += m.json;
            batch.push(m);
        }
        if !batch.is_empty() {
            self.read_batch(rows, batch).await?;
        }
        Ok(())
    }

    /// One call reading several whole texts.
    async fn read_batch<T>(
        &self,
        rows: &mut [(Conversation, T)],
        batch: Vec<Missing>,
    ) -> Result<(), StoreError> {
        let mut params = Vec::new();
        let mut wanted: [Vec<String>; TEXTS.len()] = Default::default();
        let mut ids = Vec::new();
        for (i, m) in batch.iter().enumerate() {
            let id = rows[m.row].0.id;
            params.push(uuid(&format!("id{i}"), id));
            wanted[m.column].push(format!("CAST(:id{i} AS uuid)"));
            ids.push(format!("CAST(:id{i} AS uuid)"));
        }
        let pick = |column: usize| {
            let (_, expr) = TEXTS[column];
            if wanted[column].is_empty() {
                "NULL::text".to_owned()
            } else {
                format!(
                    "CASE WHEN c.id IN ({}) THEN {expr} END",
                    wanted[column].join(", ")
                )
            }
        };
        let picks: Vec<String> = (0..TEXTS.len()).map(pick).collect();
        let sql = format!(
            "SELECT c.id::text, {} FROM conversations c WHERE c.id IN ({})",
            picks.join(", "),
            ids.join(", ")
        );
        let out = self.exec(&sql, params, None).await?;
        let mut names = vec!["id"];
        names.extend(TEXTS.iter().map(|(name, _)| *name));
        let mut found: HashMap<Uuid, Vec<Option<String>>> = HashMap::new();
        for fields in out.records() {
            let r = Record::new(fields, &names);
            let id = Uuid::try_parse(&string_at(&r, "id")?)
                .map_err(|_| StoreError::Decode { column: "id" })?;
            let mut texts = Vec::new();
            for (name, _) in TEXTS {
                texts.push(if r.is_null(name)? {
                    None
                } else {
                    Some(string_at(&r, name)?)
                });
            }
            found.insert(id, texts);
        }
        for m in batch {
            let c = &mut rows[m.row].0;
            // A row gone between the calls keeps what was read: nothing.
            if let Some(text) = found.get_mut(&c.id).and_then(|t| t[m.column].take()) {
                set_text(c, m.column, text)?;
            }
        }
        Ok(())
    }

    /// A text larger than one call, read `PIECE_CHARS` characters per call.
    async fn read_in_pieces(&self, id: Uuid, column: usize) -> Result<String, StoreError> {
        let (_, expr) = TEXTS[column];
        let sql = format!(
            "SELECT substr({expr}, CAST(:from AS int4), CAST(:n AS int4)) \
             FROM conversations c WHERE c.id = CAST(:id AS uuid)"
        );
        let mut text = String::new();
        let mut have = 0i64;
        loop {
            let params = vec![
                long("from", have + 1),
                long("n", PIECE_CHARS),
                uuid("id", id),
            ];
            let out = self.exec(&sql, params, None).await?;
            let Some(fields) = out.records().first() else {
                return Ok(text);
            };
            let piece = string_at(&Record::new(fields, &["text"]), "text")?;
            if piece.is_empty() {
                return Ok(text);
            }
            have += piece.chars().count() as i64;
            text.push_str(&piece);
        }
    }
}

/// Puts the text of [`TEXTS`]' `column` into the conversation.
fn set_text(c: &mut Conversation, column: usize, text: String) -> Result<(), StoreError> {
    match column {
        0 => c.prompt = text,
        1 => c.response = text,
        2 => c.system = Some(text),
        3 => {
            c.messages = Some(
                serde_json::from_str(&text)
                    .map_err(|_| StoreError::Decode { column: "messages" })?,
            );
        }
        _ => {
            c.tool_calls = Some(serde_json::from_str(&text).map_err(|_| StoreError::Decode {
                column: "tool_calls",
            })?);
        }
    }
    Ok(())
}

/// A record's value of `name` as a field, for callers decoding their own extra columns.
pub(super) fn field<'a>(r: &'a Record<'_>, name: &'static str) -> Result<&'a Field, StoreError> {
    r.field(name)
}
