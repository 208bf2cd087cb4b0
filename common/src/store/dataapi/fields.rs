//! Reading Data API result fields by column name: text, numbers and UTC timestamps, and a
//! conversation from the columns [`super::read::columns`] selects.

use aws_sdk_rdsdata::types::Field;
use time::OffsetDateTime;
use time::macros::format_description;
use uuid::Uuid;

use crate::domain::{Conversation, Status};
use crate::error::StoreError;

/// One result row and the names of its columns, in order.
pub(super) struct Record<'a> {
    fields: &'a [Field],
    names: &'a [&'static str],
}

impl<'a> Record<'a> {
    pub(super) fn new(fields: &'a [Field], names: &'a [&'static str]) -> Self {
        Self { fields, names }
    }

    /// The field of column `name`; a decode error when the row has no such column.
    pub(super) fn field(&self, name: &str) -> Result<&'a Field, StoreError> {
        self.names
            .iter()
            .position(|n| *n == name)
            .and_then(|i| self.fields.get(i))
            .ok_or(StoreError::Decode {
                column: self.column(name),
            })
    }

    pub(super) fn is_null(&self, name: &str) -> Result<bool, StoreError> {
        Ok(matches!(self.field(name)?, Field::IsNull(true)))
    }

    fn column(&self, name: &str) -> &'static str {
        self.names
            .iter()
            .find(|n| **n == name)
            .copied()
            .unwrap_or("unknown")
    }
}

pub(super) fn string_at(r: &Record<'_>, name: &str) -> Result<String, StoreError> {
    match r.field(name)? {
        Field::StringValue(s) => Ok(s.clone()),
        _ => Err(StoreError::Decode {
            column: r.column(name),
        }),
    }
}

pub(super) fn opt_string_at(r: &Record<'_>, name: &str) -> Result<Option<String>, StoreError> {
    if r.is_null(name)? {
        return Ok(None);
    }
    string_at(r, name).map(Some)
}

pub(super) fn long_at(r: &Record<'_>, name: &str) -> Result<i64, StoreError> {
    match r.field(name)? {
        Field::LongValue(v) => Ok(*v),
        _ => Err(StoreError::Decode {
            column: r.column(name),
        }),
    }
}

pub(super) fn opt_int_at(r: &Record<'_>, name: &str) -> Result<Option<i32>, StoreError> {
    if r.is_null(name)? {
        return Ok(None);
    }
    let v = long_at(r, name)?;
    i32::try_from(v).map(Some).map_err(|_| StoreError::Decode {
        column: r.column(name),
    })
}

/// A number read as text (`float8::text`, `numeric::text`: exact, and one type for both).
pub(super) fn opt_number_at(r: &Record<'_>, name: &str) -> Result<Option<f64>, StoreError> {
    opt_string_at(r, name)?
        .map(|s| {
            s.parse::<f64>().map_err(|_| StoreError::Decode {
                column: r.column(name),
            })
        })
        .transpose()
}

pub(super) fn opt_uuid_at(r: &Record<'_>, name: &str) -> Result<Option<Uuid>, StoreError> {
    if r.is_null(name)? {
        return Ok(None);
    }
    uuid_at(r, name).map(Some)
}

pub(super) fn uuid_at(r: &Record<'_>, name: &str) -> Result<Uuid, StoreError> {
    Uuid::try_parse(&string_at(r, name)?).map_err(|_| StoreError::Decode {
        column: r.column(name),
    })
}

pub(super) fn timestamp_at(r: &Record<'_>, name: &str) -> Result<OffsetDateTime, StoreError> {
    let fmt = format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond]");
    parse_timestamp(&string_at(r, name)?, fmt).ok_or(StoreError::Decode {
        column: r.column(name),
    })
}

fn parse_timestamp(
    s: &str,
    fmt: &[time::format_description::BorrowedFormatItem<'_>],
) -> Option<OffsetDateTime> {
    time::PrimitiveDateTime::parse(s, fmt)
        .ok()
        .map(time::PrimitiveDateTime::assume_utc)
}

/// A conversation from a record of [`super::read::columns`], its text left empty (the reader
/// fills it in).
pub(super) fn decode(r: &Record<'_>) -> Result<Conversation, StoreError> {
    let status = string_at(r, "status")?;
    Ok(Conversation {
        id: uuid_at(r, "id")?,
        owner: string_at(r, "owner")?,
        prompt: String::new(),
        response: String::new(),
        status: Status::parse(&status).ok_or(StoreError::Decode { column: "status" })?,
        error: opt_string_at(r, "error")?,
        provider: string_at(r, "provider")?,
        model: string_at(r, "model")?,
        prompt_tokens: opt_int_at(r, "prompt_tokens")?,
        completion_tokens: opt_int_at(r, "completion_tokens")?,
        total_tokens: opt_int_at(r, "total_tokens")?,
        flags: serde_json::from_str(&string_at(r, "flags")?)
            .map_err(|_| StoreError::Decode { column: "flags" })?,
        ttfb_ms: opt_int_at(r, "ttfb_ms")?,
        duration_ms: opt_int_at(r, "duration_ms")?,
        finish_reason: opt_string_at(r, "finish_reason")?,
        thread_id: uuid_at(r, "thread_id")?,
        previous_id: match opt_string_at(r, "previous_id")? {
            Some(id) => Some(Uuid::try_parse(&id).map_err(|_| StoreError::Decode {
                column: "previous_id",
            })?),
            None => None,
        },
        system: None,
        messages: None,
        context_turns: opt_int_at(r, "context_turns")?,
        tool_calls: None,
        prompt_parts: None,
        attempts: match opt_string_at(r, "attempts")? {
            Some(a) => Some(
                serde_json::from_str(&a).map_err(|_| StoreError::Decode { column: "attempts" })?,
            ),
            None => None,
        },
        tools: match opt_string_at(r, "tools")? {
            Some(t) => {
                Some(serde_json::from_str(&t).map_err(|_| StoreError::Decode { column: "tools" })?)
            }
            None => None,
        },
        cost_usd: opt_number_at(r, "cost_usd")?,
        key_id: opt_uuid_at(r, "key_id")?,
        created_at: timestamp_at(r, "created_at")?,
        updated_at: timestamp_at(r, "updated_at")?,
        truncated: false,
        heartbeat_at: if r.is_null("heartbeat_at")? {
            None
        } else {
            Some(timestamp_at(r, "heartbeat_at")?)
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::dataapi::params::timestamp;

    #[test]
    fn timestamps_round_trip_in_utc_with_microseconds() {
        let t = time::macros::datetime!(2026-11-25 10:20:30.123456 +02:00);
        let p = timestamp("t", t);
        let Some(Field::StringValue(s)) = p.value() else {
            panic!("{p:?}");
        };
        assert_eq!(s, "2026-11-25 08:20:30.123456");
        let names = ["t"];
        let fields = [Field::StringValue(s.clone())];
        let back = timestamp_at(&Record::new(&fields, &names), "t").unwrap();
        assert_eq!(back, t);
        let fields = [Field::StringValue("2026-11-25 08:20:30.5".into())];
        assert!(timestamp_at(&Record::new(&fields, &names), "t").is_ok());
    }
}
