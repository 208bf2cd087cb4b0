//! Reading Data API result fields: text, numbers and UTC timestamps, and a conversation from
//! the columns [`super::text::columns`] selects.

use aws_sdk_rdsdata::types::Field;
use time::OffsetDateTime;
use time::macros::format_description;
use uuid::Uuid;

use crate::domain::{Conversation, Status};
use crate::error::StoreError;

pub(super) fn field<'a>(
    r: &'a [Field],
    i: usize,
    column: &'static str,
) -> Result<&'a Field, StoreError> {
    r.get(i).ok_or(StoreError::Decode { column })
}

pub(super) fn is_null(f: &Field) -> bool {
    matches!(f, Field::IsNull(true))
}

pub(super) fn string_at(r: &[Field], i: usize, column: &'static str) -> Result<String, StoreError> {
    match field(r, i, column)? {
        Field::StringValue(s) => Ok(s.clone()),
        _ => Err(StoreError::Decode { column }),
    }
}

pub(super) fn opt_string_at(
    r: &[Field],
    i: usize,
    column: &'static str,
) -> Result<Option<String>, StoreError> {
    let f = field(r, i, column)?;
    if is_null(f) {
        return Ok(None);
    }
    string_at(r, i, column).map(Some)
}

pub(super) fn long_at(r: &[Field], i: usize, column: &'static str) -> Result<i64, StoreError> {
    match field(r, i, column)? {
        Field::LongValue(v) => Ok(*v),
        _ => Err(StoreError::Decode { column }),
    }
}

pub(super) fn opt_int_at(
    r: &[Field],
    i: usize,
    column: &'static str,
) -> Result<Option<i32>, StoreError> {
    let f = field(r, i, column)?;
    if is_null(f) {
        return Ok(None);
    }
    let v = long_at(r, i, column)?;
    i32::try_from(v)
        .map(Some)
        .map_err(|_| StoreError::Decode { column })
}

pub(super) fn timestamp_at(
    r: &[Field],
    i: usize,
    column: &'static str,
) -> Result<OffsetDateTime, StoreError> {
    let fmt = format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond]");
    let s = string_at(r, i, column)?;
    time::PrimitiveDateTime::parse(&s, &fmt)
        .map(time::PrimitiveDateTime::assume_utc)
        .map_err(|_| StoreError::Decode { column })
}

/// A conversation from the first 16 [`columns`] (text as far as its prefix goes).
pub(super) fn decode(r: &[Field]) -> Result<Conversation, StoreError> {
    let status = string_at(r, 4, "status")?;
    Ok(Conversation {
        id: Uuid::try_parse(&string_at(r, 0, "id")?)
            .map_err(|_| StoreError::Decode { column: "id" })?,
        owner: string_at(r, 1, "owner")?,
        prompt: string_at(r, 2, "prompt")?,
        response: string_at(r, 3, "response")?,
        status: Status::parse(&status).ok_or(StoreError::Decode { column: "status" })?,
        error: opt_string_at(r, 5, "error")?,
        provider: string_at(r, 6, "provider")?,
        model: string_at(r, 7, "model")?,
        prompt_tokens: opt_int_at(r, 8, "prompt_tokens")?,
        completion_tokens: opt_int_at(r, 9, "completion_tokens")?,
        total_tokens: opt_int_at(r, 10, "total_tokens")?,
        flags: serde_json::from_str(&string_at(r, 11, "flags")?)
            .map_err(|_| StoreError::Decode { column: "flags" })?,
        ttfb_ms: opt_int_at(r, 12, "ttfb_ms")?,
        duration_ms: opt_int_at(r, 13, "duration_ms")?,
        created_at: timestamp_at(r, 14, "created_at")?,
        updated_at: timestamp_at(r, 15, "updated_at")?,
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
        let back = timestamp_at(&[Field::StringValue(s.clone())], 0, "t").unwrap();
        assert_eq!(back, t);
        let whole = timestamp_at(
            &[Field::StringValue("2026-11-25 08:20:30.5".into())],
            0,
            "t",
        );
        assert!(whole.is_ok());
    }
}
