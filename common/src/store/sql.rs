//! The SQL text both store backends share: the column lists, the idempotent finish upsert and
//! the search queries. The pool sends it with positional parameters (`$1`); the Data API backend
//! rewrites the parameters into named, typed ones.

/// The conversation columns, as the pool reads them.
pub(crate) const COLUMNS: &str = "id, owner, prompt, response, status, error, provider, model, prompt_tokens, \
    completion_tokens, total_tokens, flags, ttfb_ms, duration_ms, created_at, updated_at";

/// The end of the idempotent finish upsert both backends write: everything a stream's end may
/// change, never the id, prompt, provider, owner or start time.
pub(crate) const FINISH_ON_CONFLICT: &str = "ON CONFLICT (id) DO UPDATE SET response = EXCLUDED.response, \
    status = EXCLUDED.status, error = EXCLUDED.error, model = EXCLUDED.model, \
    prompt_tokens = EXCLUDED.prompt_tokens, completion_tokens = EXCLUDED.completion_tokens, \
    total_tokens = EXCLUDED.total_tokens, ttfb_ms = EXCLUDED.ttfb_ms, \
    duration_ms = EXCLUDED.duration_ms, updated_at = EXCLUDED.updated_at, flags = EXCLUDED.flags";

/// The search query, around the rows it reads (`{source}`): the newest `$4` matches are the
/// candidates, ranked; only the page's rows get a headline. The tsquery is written inline (not
/// in a CTE) so that, with `plan_cache_mode = force_custom_plan` (set on every connection), the
/// planner estimates the real match count: for a broad term it walks the `created_at` index
/// newest first and stops after `$4` matches; for a rare one it reads the few GIN matches.
/// `found` tells how many candidates there were.
const SEARCH_TEMPLATE: &str = "\
    WITH candidates AS ( \
        SELECT c.id, c.created_at, c.search FROM {source} \
        WHERE c.search @@ websearch_to_tsquery('{config}'::regconfig, $1) \
          AND c.owner = $7 \
          AND ($2::timestamptz IS NULL OR c.created_at >= $2) \
          AND ($3::timestamptz IS NULL OR c.created_at < $3) \
        ORDER BY c.created_at DESC, c.id DESC \
        LIMIT $4), \
    page AS ( \
        SELECT k.id, ts_rank(k.search, websearch_to_tsquery('{config}'::regconfig, $1)) AS rank \
        FROM candidates k \
        ORDER BY rank DESC, k.created_at DESC, k.id DESC \
        LIMIT $5 OFFSET $6) \
    SELECT {columns}, page.rank, \
        ts_headline('{config}'::regconfig, left(c.prompt, 2000) || ' … ' || left(c.response, 20000), \
            websearch_to_tsquery('{config}'::regconfig, $1), \
            'StartSel=<mark>, StopSel=</mark>, MaxWords=30, MinWords=10, \
            MaxFragments=2, FragmentDelimiter=\" … \"') AS snippet, \
        (SELECT count(*) FROM candidates) AS found \
    FROM page JOIN conversations c ON c.id = page.id \
    ORDER BY page.rank DESC, c.created_at DESC, c.id DESC";

/// The conversation columns the search selects (the Data API backend selects text forms).
pub(crate) const SEARCH_COLUMNS: &str = "c.id, c.owner, c.prompt, c.response, c.status, c.error, \
    c.provider, c.model, c.prompt_tokens, c.completion_tokens, c.total_tokens, c.flags, \
    c.ttfb_ms, c.duration_ms, c.created_at, c.updated_at";

/// The search over the whole table with text search configuration `config` (written into the
/// SQL as a literal, so PostgreSQL computes the tsquery once, not once per row); the plan is
/// PostgreSQL's choice.
pub fn search_sql(config: &str) -> String {
    SEARCH_TEMPLATE
        .replace("{source}", "conversations c")
        .replace("{columns}", SEARCH_COLUMNS)
        .replace("{config}", config)
}

/// The search over the newest `$8` rows only (in the date range), read newest first. Used first
/// for phrase queries, whose match count PostgreSQL underestimates (the words of a phrase occur
/// together far more often than independence predicts): it would read every match of the words
/// through the GIN index and recheck each. When the window holds all `$4` candidates the answer
/// is the same as [`search_sql`]'s.
pub fn search_window_sql(config: &str) -> String {
    SEARCH_TEMPLATE
        .replace(
            "{source}",
            "(SELECT id, owner, created_at, search FROM conversations \
              WHERE owner = $7 \
                AND ($2::timestamptz IS NULL OR created_at >= $2) \
                AND ($3::timestamptz IS NULL OR created_at < $3) \
              ORDER BY created_at DESC, id DESC LIMIT $8) c",
        )
        .replace("{columns}", SEARCH_COLUMNS)
        .replace("{config}", config)
}

/// How many of the newest rows the phrase window reads.
pub(crate) const PHRASE_WINDOW_ROWS: i64 = 50_000;
