//! The schema, shared by both store backends: the migration files embedded in the binary, how
//! they are split into statements (the Data API runs one per call), and the SQL that rebuilds
//! the search column for another text search configuration.

mod embedded {
    refinery::embed_migrations!("../migrations");
}

/// The advisory lock every migrator holds ("llmstrm1").
pub(crate) const MIGRATION_LOCK: i64 = 0x6c6c_6d73_7472_6d31;

/// refinery's runner over the embedded files (the pool applies them with it).
pub(crate) fn runner() -> refinery::Runner {
    embedded::migrations::runner()
}

/// The embedded migrations (the same files refinery applies through the pool), for the Data
/// API, which runs them one statement at a time.
pub(crate) fn embedded_migrations() -> Vec<refinery::Migration> {
    let mut all = runner().get_migrations().clone();
    // Embedded in the order of their file names (V10 before V2): applied by version.
    all.sort_by_key(refinery::Migration::version);
    all
}

/// Reads the expression of the generated search column (no row before migration V2).
pub(crate) const SEARCH_EXPR_SQL: &str = "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d \
     JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum \
     WHERE d.adrelid = 'conversations'::regclass AND a.attname = 'search'";

/// True when the search column expression `expr` was built with `config`.
pub(crate) fn search_config_matches(expr: &str, config: &str) -> bool {
    expr.contains(&format!("'{config}'::regconfig"))
}

/// The statements that rebuild the search column and its index with configuration `name`
/// (a name read back from `pg_ts_config`, never raw input); run them in one transaction.
pub(crate) fn search_column_ddl(name: &str) -> [String; 4] {
    [
        "DROP INDEX IF EXISTS conversations_search_idx".into(),
        "ALTER TABLE conversations DROP COLUMN search".into(),
        format!(
            "ALTER TABLE conversations ADD COLUMN search tsvector GENERATED ALWAYS AS ( \
             setweight(to_tsvector('{name}'::regconfig, left(prompt, 32000)), 'A') || \
             setweight(to_tsvector('{name}'::regconfig, left(response, 100000)), 'B') || \
             setweight(to_tsvector('{name}'::regconfig, coalesce(tool_calls, '[]'::jsonb)), 'C')) \
             STORED"
        ),
        SEARCH_INDEX_DDL.into(),
    ]
}

/// Makes the search index as migration V16 does: over owner, words and UTC week when btree_gin
/// is installed, over the words alone otherwise.
pub const SEARCH_INDEX_DDL: &str = "DO $$ BEGIN \
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'btree_gin') THEN \
        CREATE INDEX IF NOT EXISTS conversations_search_idx ON conversations USING gin ( \
            owner, search, (date_trunc('week', created_at AT TIME ZONE 'UTC'))); \
    ELSE \
        CREATE INDEX IF NOT EXISTS conversations_search_idx ON conversations USING gin (search); \
    END IF; END $$";

/// Splits a migration file into statements at `;`, outside quotes, comments and dollar-quoted
/// bodies. Statements that are only comments or blank are dropped.
pub(crate) fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut meaningful = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '-' if chars.peek() == Some(&'-') => {
                // A line comment: dropped.
                for n in chars.by_ref() {
                    if n == '\n' {
                        current.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
                current.push(' ');
            }
            '\'' | '"' => {
                meaningful = true;
                current.push(c);
                for n in chars.by_ref() {
                    current.push(n);
                    if n == c {
                        break;
                    }
                }
            }
            '$' => {
                meaningful = true;
                dollar_quoted(&mut chars, &mut current);
            }
            ';' => {
                if meaningful {
                    out.push(current.trim().to_owned());
                }
                current.clear();
                meaningful = false;
            }
            c => {
                meaningful |= !c.is_whitespace();
                current.push(c);
            }
        }
    }
    if meaningful {
        out.push(current.trim().to_owned());
    }
    out
}

/// After a `$`: copies a dollar-quoted body, `$tag$ ... $tag$`, whole into `out` (a `$1`
/// parameter is not one: copied as it is).
fn dollar_quoted(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, out: &mut String) {
    let mut tag = String::from("$");
    while let Some(&n) = chars.peek() {
        if n.is_alphanumeric() || n == '_' {
            tag.push(n);
            chars.next();
        } else {
            break;
        }
    }
    out.push_str(&tag);
    if chars.peek() == Some(&'$') && !tag[1..].starts_with(|d: char| d.is_ascii_digit()) {
        chars.next();
        tag.push('$');
        out.push('$');
        let mut body = String::new();
        for n in chars.by_ref() {
            body.push(n);
            if body.ends_with(&tag) {
                break;
            }
        }
        out.push_str(&body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_outside_quotes_and_comments() {
        let sql = "-- a comment; with a semicolon\nCREATE TABLE t (a text DEFAULT ';');\n\
                   /* block; comment */ SELECT $$a;b$$, $1;\n  \n-- trailing\n";
        assert_eq!(
            split_statements(sql),
            vec!["CREATE TABLE t (a text DEFAULT ';')", "SELECT $$a;b$$, $1"]
        );
        for m in embedded_migrations() {
            let parts = split_statements(m.sql().unwrap_or_default());
            assert!(!parts.is_empty(), "{}", m.name());
            // A `;` is left only inside a dollar-quoted body.
            assert!(
                parts.iter().all(|p| !p.contains(';') || p.contains("$$")),
                "{parts:?}"
            );
        }
    }
}
