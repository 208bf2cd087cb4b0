//! Parameters as the Data API takes them: each value with its type hint, and the SQL casts that
//! go with them (timestamps travel as UTC `timestamp` text).

use aws_sdk_rdsdata::types::{Field, SqlParameter, TypeHint};
use time::OffsetDateTime;
use time::macros::format_description;
use uuid::Uuid;

/// A `timestamptz` column as UTC text with microseconds.
pub(super) fn utc_text(column: &str) -> String {
    format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
}

/// A timestamp parameter, sent as UTC, as a `timestamptz`.
pub(super) fn utc_param(name: &str) -> String {
    format!("(CAST(:{name} AS timestamp) AT TIME ZONE 'UTC')")
}

pub(super) fn param(name: &str, value: Field, hint: Option<TypeHint>) -> SqlParameter {
    SqlParameter::builder()
        .name(name)
        .value(value)
        .set_type_hint(hint)
        .build()
}

pub(super) fn text(name: &str, v: &str) -> SqlParameter {
    param(name, Field::StringValue(v.to_owned()), None)
}

pub(super) fn long(name: &str, v: i64) -> SqlParameter {
    param(name, Field::LongValue(v), None)
}

pub(super) fn opt_int(name: &str, v: Option<i32>) -> SqlParameter {
    match v {
        Some(v) => long(name, i64::from(v)),
        None => param(name, Field::IsNull(true), None),
    }
}

pub(super) fn opt_text(name: &str, v: Option<&str>) -> SqlParameter {
    match v {
        Some(v) => text(name, v),
        None => param(name, Field::IsNull(true), None),
    }
}

pub(super) fn uuid(name: &str, v: Uuid) -> SqlParameter {
    param(
        name,
        Field::StringValue(v.hyphenated().to_string()),
        Some(TypeHint::Uuid),
    )
}

/// A timestamp as the Data API takes it: `YYYY-MM-DD HH:MM:SS.ffffff`, in UTC.
pub(super) fn timestamp(name: &str, v: OffsetDateTime) -> SqlParameter {
    let fmt =
        format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:6]");
    let utc = v.to_offset(time::UtcOffset::UTC);
    param(
        name,
        Field::StringValue(utc.format(&fmt).unwrap_or_default()),
        Some(TypeHint::Timestamp),
    )
}

pub(super) fn opt_timestamp(name: &str, v: Option<OffsetDateTime>) -> SqlParameter {
    match v {
        Some(v) => timestamp(name, v),
        None => param(name, Field::IsNull(true), Some(TypeHint::Timestamp)),
    }
}

pub(super) fn json(name: &str, v: &serde_json::Value) -> SqlParameter {
    param(
        name,
        Field::StringValue(v.to_string()),
        Some(TypeHint::Json),
    )
}

pub(super) fn blob(name: &str, v: &[u8]) -> SqlParameter {
    param(
        name,
        Field::BlobValue(aws_sdk_rdsdata::primitives::Blob::new(v)),
        None,
    )
}

pub(super) fn opt_uuid(name: &str, v: Option<Uuid>) -> SqlParameter {
    match v {
        Some(v) => uuid(name, v),
        None => param(name, Field::IsNull(true), Some(TypeHint::Uuid)),
    }
}

pub(super) fn opt_json(name: &str, v: Option<&serde_json::Value>) -> SqlParameter {
    match v {
        Some(v) => json(name, v),
        None => param(name, Field::IsNull(true), Some(TypeHint::Json)),
    }
}
