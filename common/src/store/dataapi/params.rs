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

/// The SQL the pool sends (`$n`, each cast where it is used: `$n::type`) with the Data API's
/// named parameters, so one statement text serves both backends: `$n::type` becomes
/// `CAST(:pn AS type)` (a `timestamptz` travels as UTC `timestamp` text, see [`utc_param`]), a
/// bare `$n` becomes `:pn`. The values go by position in an [`Args`].
pub(super) fn named(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 256);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            out.push('$');
            rest = after;
            continue;
        }
        let name = format!("p{}", &after[..digits]);
        let tail = &after[digits..];
        let cast = tail.strip_prefix("::").map(|t| {
            let len = t
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            &t[..len]
        });
        match cast {
            Some("timestamptz") => {
                out.push_str(&utc_param(&name));
                rest = &tail[2 + "timestamptz".len()..];
            }
            Some(kind) if !kind.is_empty() => {
                out.push_str(&format!("CAST(:{name} AS {kind})"));
                rest = &tail[2 + kind.len()..];
            }
            _ => {
                out.push(':');
                out.push_str(&name);
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The values of a [`named`] statement, in the order of their `$n`.
#[derive(Default, Clone)]
pub(super) struct Args(pub(super) Vec<SqlParameter>);

impl Args {
    fn next(&self) -> String {
        format!("p{}", self.0.len() + 1)
    }
    pub(super) fn text(mut self, v: &str) -> Self {
        self.0.push(text(&self.next(), v));
        self
    }
    pub(super) fn opt_text(mut self, v: Option<&str>) -> Self {
        self.0.push(opt_text(&self.next(), v));
        self
    }
    pub(super) fn uuid(mut self, v: Uuid) -> Self {
        self.0.push(uuid(&self.next(), v));
        self
    }
    pub(super) fn opt_uuid(mut self, v: Option<Uuid>) -> Self {
        self.0.push(opt_uuid(&self.next(), v));
        self
    }
    pub(super) fn long(mut self, v: i64) -> Self {
        self.0.push(long(&self.next(), v));
        self
    }
    pub(super) fn opt_int(mut self, v: Option<i32>) -> Self {
        self.0.push(opt_int(&self.next(), v));
        self
    }
    pub(super) fn double(mut self, v: f64) -> Self {
        self.0
            .push(param(&self.next(), Field::DoubleValue(v), None));
        self
    }
    pub(super) fn opt_double(mut self, v: Option<f64>) -> Self {
        let field = v.map_or(Field::IsNull(true), Field::DoubleValue);
        self.0.push(param(&self.next(), field, None));
        self
    }
    pub(super) fn opt_timestamp(mut self, v: Option<OffsetDateTime>) -> Self {
        self.0.push(opt_timestamp(&self.next(), v));
        self
    }
    pub(super) fn timestamp(mut self, v: OffsetDateTime) -> Self {
        self.0.push(timestamp(&self.next(), v));
        self
    }
    pub(super) fn json(mut self, v: &serde_json::Value) -> Self {
        self.0.push(json(&self.next(), v));
        self
    }
    pub(super) fn opt_json(mut self, v: Option<&serde_json::Value>) -> Self {
        self.0.push(opt_json(&self.next(), v));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positional_parameters_become_named_and_typed() {
        assert_eq!(
            named("SELECT $1::uuid, $2, $12::int8, $3::timestamptz, '$x' WHERE a = $1::uuid"),
            "SELECT CAST(:p1 AS uuid), :p2, CAST(:p12 AS int8), \
             (CAST(:p3 AS timestamp) AT TIME ZONE 'UTC'), '$x' WHERE a = CAST(:p1 AS uuid)"
        );
    }
}
