//! The SQL text of the stores, written once for both backends: the pool sends it as it is, with
//! positional parameters (`$1`, each cast where it is used: `$1::uuid`); the Data API backend
//! rewrites them into named, typed ones (`dataapi::params::named`).

/// A turn's text: the row's `response` once the turn has ended; while it is `streaming`, its
/// log (the stored text the checkpoints wrote, in order), or the row's `response` for a turn
/// begun before the log existed. `c` is the conversations row.
pub(crate) const RESPONSE: &str = "CASE WHEN c.status = 'streaming' THEN coalesce(\
    (SELECT string_agg(k.text, '' ORDER BY k.position) FROM turn_chunks k WHERE k.turn_id = c.id), \
    c.response) ELSE c.response END";

/// The conversation columns as the pool reads them, from `conversations c`.
pub(crate) fn columns() -> String {
    columns_with(RESPONSE)
}

/// [`columns`] with `response` the value of `response` (`''`: left out).
pub(crate) fn columns_with(response: &str) -> String {
    columns_of(response, "c.messages")
}

/// [`columns_with`], `messages` the value of `messages`.
fn columns_of(response: &str, messages: &str) -> String {
    format!(
        "c.id, c.owner, c.prompt, {response} AS response, c.status, c.error, c.provider, \
         c.model, c.prompt_tokens, c.completion_tokens, c.total_tokens, c.flags, c.ttfb_ms, \
         c.duration_ms, c.finish_reason, c.thread_id, c.previous_id, c.system, {messages} AS messages, \
         c.context_turns, c.tool_calls, c.tools, c.prompt_parts, c.attempts, c.cost_usd, \
         c.key_id, c.created_at, c.updated_at, c.heartbeat_at"
    )
}

/// Commits the statement's transaction without waiting for its WAL to reach the disk: for the
/// writes a turn's final record supersedes (its start row, its log pieces, its heartbeat), which
/// other sessions see at once all the same. A PostgreSQL crash may lose the last few hundred
/// milliseconds of them (`wal_writer_delay` × 3); the final record, committed durably, restores
/// the row and the whole text. Half of a short turn's commits stop waiting for the disk.
pub(crate) const ASYNC_COMMIT: &str = "set_config('synchronous_commit', 'off', true) IS NOT NULL";

/// A turn's row as its stream starts ($1 id, $2 prompt, $3 provider, $4 model, $5 created_at,
/// $6 owner, $7 thread_id, $8 previous_id, $9 system, $10 messages, $11 context_turns); nothing
/// when it is already there. A turn of a deleted thread is refused by the table's trigger.
/// Committed asynchronously ([`ASYNC_COMMIT`]).
pub(crate) const CREATE: &str = "INSERT INTO conversations (id, prompt, response, status, \
    provider, model, created_at, updated_at, owner, thread_id, previous_id, system, messages, \
    context_turns, heartbeat_at) \
    SELECT $1::uuid, $2::text, '', 'streaming', $3::text, $4::text, $5::timestamptz, \
    $5::timestamptz, $6::text, $7::uuid, $8::uuid, $9::text, $10::jsonb, $11::int4, now() \
    WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL \
    ON CONFLICT (id) DO NOTHING";

/// One checkpoint in one statement: the row from [`CREATE`]'s parameters when it may be missing
/// (`with_row`), the next piece of the turn's log (`with_piece`: its position and text follow
/// the row's parameters, or the id), the turn's heartbeat, and whether a cancel was asked for.
/// A piece is idempotent by position and length: sent again at the same position (a checkpoint
/// whose commit its caller did not hear of), the longer text stays, so the log never skips or
/// repeats text. A row inserted by this statement is not yet visible to its own update: it
/// reads as not found (and not cancelled); its heartbeat is its insert. Committed
/// asynchronously ([`ASYNC_COMMIT`]).
pub(crate) fn checkpoint(with_row: bool, with_piece: bool) -> String {
    let mut ctes = Vec::new();
    if with_row {
        ctes.push(format!("row AS ({CREATE} RETURNING id)"));
    }
    if with_piece {
        let (at, text) = if with_row {
            ("$12", "$13")
        } else {
            ("$2", "$3")
        };
        // Only for a row that exists (or is written here): a turn whose thread was deleted
        // while it ran logs nothing.
        let exists = if with_row {
            "EXISTS (SELECT 1 FROM conversations WHERE id = $1::uuid) OR EXISTS (SELECT 1 FROM row)"
        } else {
            "EXISTS (SELECT 1 FROM conversations WHERE id = $1::uuid)"
        };
        ctes.push(format!(
            "piece AS (INSERT INTO turn_chunks AS k (turn_id, position, text) \
             SELECT $1::uuid, {at}::int8, {text}::text WHERE {exists} \
             ON CONFLICT (turn_id, position) DO UPDATE SET text = EXCLUDED.text \
             WHERE char_length(EXCLUDED.text) > char_length(k.text))"
        ));
    }
    ctes.push(
        "beat AS (UPDATE conversations SET heartbeat_at = now() WHERE id = $1::uuid \
         RETURNING cancel_requested)"
            .to_owned(),
    );
    format!(
        "WITH {} SELECT cancel_requested FROM beat WHERE {ASYNC_COMMIT}",
        ctes.join(", ")
    )
}

/// The final record, inserted whole when its start was never written (a turn of a deleted
/// thread is refused by the table's trigger), and the turn's log dropped (its text is now the
/// row's `response`).
pub(crate) const FINISH: &str = "WITH log AS (DELETE FROM turn_chunks WHERE turn_id = $1::uuid) \
    INSERT INTO conversations (id, prompt, response, status, error, provider, model, \
    prompt_tokens, completion_tokens, total_tokens, ttfb_ms, duration_ms, created_at, \
    updated_at, owner, flags, finish_reason, thread_id, previous_id, system, messages, \
    context_turns, tool_calls, tools, prompt_parts, attempts, cost_usd, key_id) \
    SELECT $1::uuid, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text, $8::int4, \
    $9::int4, $10::int4, $11::int4, $12::int4, $13::timestamptz, $14::timestamptz, \
    $15::text, $16::jsonb, $17::text, $18::uuid, $19::uuid, $20::text, $21::jsonb, $22::int4, \
    $23::jsonb, $24::jsonb, $25::jsonb, $26::jsonb, $27::float8, $28::uuid \
    ON CONFLICT (id) DO UPDATE SET response = EXCLUDED.response, \
    status = EXCLUDED.status, error = EXCLUDED.error, model = EXCLUDED.model, \
    prompt_tokens = EXCLUDED.prompt_tokens, completion_tokens = EXCLUDED.completion_tokens, \
    total_tokens = EXCLUDED.total_tokens, ttfb_ms = EXCLUDED.ttfb_ms, \
    duration_ms = EXCLUDED.duration_ms, updated_at = EXCLUDED.updated_at, \
    flags = EXCLUDED.flags, finish_reason = EXCLUDED.finish_reason, \
    context_turns = EXCLUDED.context_turns, system = EXCLUDED.system, \
    messages = EXCLUDED.messages, tool_calls = EXCLUDED.tool_calls, tools = EXCLUDED.tools, \
    prompt_parts = EXCLUDED.prompt_parts, attempts = EXCLUDED.attempts, \
    provider = EXCLUDED.provider, cost_usd = EXCLUDED.cost_usd, key_id = EXCLUDED.key_id";

/// One page of the turns that may lie on the chain ending at turn $1 of owner $2: its thread's
/// turns up to it, newest first, after the keyset position ($3 created_at, $4 id; null: from
/// the turn itself), at most $5. Walked in memory by [`walk_chain`], page by page, so that no
/// read is larger than a page however long the thread (the Data API answers at most 1 MiB).
/// `columns`: the backend's conversation columns.
pub(crate) fn chain_page(columns: &str) -> String {
    format!(
        "SELECT {columns} FROM conversations c \
         WHERE c.thread_id = (SELECT p.thread_id FROM conversations p \
                              WHERE p.id = $1::uuid AND p.owner = $2::text) \
           AND (c.created_at, c.id) <= (SELECT p.created_at, p.id FROM conversations p \
                                        WHERE p.id = $1::uuid) \
           AND ($3::timestamptz IS NULL OR (c.created_at, c.id) < ($3::timestamptz, $4::uuid)) \
         ORDER BY c.created_at DESC, c.id DESC LIMIT $5::int8"
    )
}

/// The turns one chain page reads.
pub(crate) const CHAIN_PAGE: i64 = 64;

/// The chain ending at `last`: `last`, the turn it continues, and so on, newest first, while
/// their prompts and answers total at most `budget` characters (the turn that crosses it is
/// included). Pages of the thread (newest first, see [`chain_page`]) are read with `page`
/// (given the position after the last row read) only as far as the chain and the budget
/// reach. `None` when `last` is not found.
pub(crate) async fn walk_chain<F, Fut>(
    last: uuid::Uuid,
    budget: i64,
    mut page: F,
) -> Result<Option<Vec<super::ChainTurn>>, crate::error::StoreError>
where
    F: FnMut(Option<super::Cursor>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<crate::Conversation>, crate::error::StoreError>>,
{
    let mut chain = Vec::new();
    let mut next = Some(last);
    let mut total = 0i64;
    let mut after = None;
    loop {
        let rows = page(after).await?;
        let more = rows.len() as i64 >= CHAIN_PAGE;
        after = rows.last().map(super::Cursor::after);
        // The chain's turns are older than the turns they continue: whatever this page does not
        // hold of it lies on a later page.
        let mut by_id: std::collections::HashMap<uuid::Uuid, crate::Conversation> =
            rows.into_iter().map(|c| (c.id, c)).collect();
        while let Some(id) = next {
            let Some(c) = by_id.remove(&id) else { break };
            if !chain.is_empty() && total > budget {
                return Ok(Some(chain));
            }
            total += (c.prompt.chars().count() + c.response.chars().count()) as i64;
            next = c.previous_id;
            chain.push(super::ChainTurn {
                id: c.id,
                thread_id: c.thread_id,
                prompt: c.prompt,
                response: c.response,
                status: c.status,
                system: c.system,
            });
        }
        if next.is_none() || !more || (!chain.is_empty() && total > budget) {
            break;
        }
    }
    Ok((!chain.is_empty()).then_some(chain))
}

/// A turn's stored text from character `$from` on (at most `$n` characters): its log while it
/// runs (pieces are contiguous: each starts where the previous ended), its answer once ended.
/// `c` is the row.
pub(crate) fn text_from(from: &str, n: &str) -> String {
    format!(
        "CASE WHEN c.status = 'streaming' THEN coalesce(( \
            SELECT substr(string_agg(CASE WHEN k.position >= {from} THEN k.text \
                ELSE substr(k.text, ({from} - k.position + 1)::int4) END, '' ORDER BY k.position), 1, {n}) \
            FROM turn_chunks k WHERE k.turn_id = c.id AND k.position + char_length(k.text) > {from}), \
            substr(c.response, ({from} + 1)::int4, {n})) \
         ELSE substr(c.response, ({from} + 1)::int4, {n}) END"
    )
}

/// The length in characters of a turn's stored text (see [`RESPONSE`]).
pub(crate) fn text_total() -> String {
    format!("char_length({RESPONSE})")
}

/// Asks for turn $1 of owner $2 to be cancelled when it is still running (and not abandoned:
/// started within $3 seconds, and heard from within $4); returns its status before, and
/// whether the request was made.
pub(crate) const REQUEST_CANCEL: &str = "WITH t AS ( \
        SELECT id, status FROM conversations WHERE id = $1::uuid AND owner = $2::text), \
    asked AS ( \
        UPDATE conversations c SET cancel_requested = true FROM t \
        WHERE c.id = t.id AND c.status = 'streaming' \
          AND c.created_at > now() - make_interval(secs => $3::float8) \
          AND coalesce(c.heartbeat_at, c.created_at) > now() - make_interval(secs => $4::float8) \
        RETURNING c.id) \
    SELECT t.status, EXISTS (SELECT 1 FROM asked) AS asked FROM t";

/// A page of thread $1's turns of owner $2, oldest first, after the position ($3 created_at,
/// $4 id; null: from the first), at most $5 (the caller asks one more, to know whether more
/// follow). `columns`: the backend's conversation columns.
pub(crate) fn thread_turns(columns: &str) -> String {
    format!(
        "SELECT {columns} FROM conversations c WHERE c.thread_id = $1::uuid AND c.owner = $2::text \
           AND ($3::timestamptz IS NULL OR (c.created_at, c.id) > ($3::timestamptz, $4::uuid)) \
         ORDER BY c.created_at, c.id LIMIT $5::int8"
    )
}

/// Makes login role $1 with password $2, member of the roles $3 (migration V9).
pub(crate) const ENSURE_LOGIN: &str = "SELECT llm_stream_login($1::text, $2::text, $3::text)";

/// The columns a continuation reads of each turn on its chain (see [`chain_page`]): all but a
/// `/v1` call's earlier messages, which the context does not use (and which can be large).
pub(crate) fn chain_columns() -> String {
    columns_of(RESPONSE, "NULL::jsonb")
}

/// The thread columns, from `threads t`.
pub(crate) const THREAD_COLUMNS: &str = "t.id, t.title, t.turns, t.created_at, t.updated_at";

/// Deletes thread $1 of owner $2 and every turn of it, leaving a tombstone (migration V8's
/// `delete_thread`: a turn still running must not bring it back); whether there was one.
pub(crate) const DELETE_THREAD: &str = "SELECT delete_thread($1::uuid, $2::text) AS deleted";

/// The search query, around its candidates (`{candidates}`: the newest `$4` matches of owner
/// `$7` in the date range), which it ranks; only the page's rows get a headline. The tsquery is
/// written inline (not in a CTE) so that, with `plan_cache_mode = force_custom_plan` (set on
/// every connection), the planner estimates the real match count. `found` tells how many
/// candidates there were.
const SEARCH_TEMPLATE: &str = "\
    WITH candidates AS ({candidates}), \
    page AS ( \
        SELECT k.id, ts_rank(k.search, websearch_to_tsquery('{config}'::regconfig, $1::text)) AS rank \
        FROM candidates k \
        ORDER BY rank DESC, k.created_at DESC, k.id DESC \
        LIMIT $5::int8 OFFSET $6::int8) \
    SELECT {columns}, page.rank, \
        ts_headline('{config}'::regconfig, left(c.prompt, 2000) || ' … ' || left(c.response, 20000) \
            || coalesce(' … ' || left(c.tool_calls::text, 2000), ''), \
            websearch_to_tsquery('{config}'::regconfig, $1::text), \
            'StartSel=<mark>, StopSel=</mark>, MaxWords=30, MinWords=10, \
            MaxFragments=2, FragmentDelimiter=\" … \"') AS snippet, \
        (SELECT count(*) FROM candidates) AS found \
    FROM page JOIN conversations c ON c.id = page.id \
    ORDER BY page.rank DESC, c.created_at DESC, c.id DESC";

/// The matches of one UTC week (`w.week`), newest first, at most `$4`. Migration V16 indexes the
/// week twice, and the planner picks by how common the words are: for a rare or middling term
/// the GIN index (owner, words, week) gives this owner's matches of this week in one scan; for a
/// broad one the btree (owner, week, created_at) is walked newest first and stops at the `$4`th
/// match. (No `created_at` range here: the planner would AND the `created_at` index's bitmap of
/// the whole week with the GIN's, a cost that grows with the table.)
const WEEK_MATCHES: &str = "\
    SELECT c.id, c.created_at, c.search FROM conversations c \
    WHERE date_trunc('week', c.created_at AT TIME ZONE 'UTC') = w.week \
      AND c.search @@ websearch_to_tsquery('{config}'::regconfig, $1::text) \
      AND c.owner = $7::text \
      AND ($2::timestamptz IS NULL OR c.created_at >= $2::timestamptz) \
      AND ($3::timestamptz IS NULL OR c.created_at < $3::timestamptz) \
    ORDER BY c.created_at DESC, c.id DESC \
    LIMIT $4::int8";

/// How many of the owner's newest weeks the search reads one by one before it reads the rest
/// in one scan.
pub(crate) const SEARCH_WEEKS: i32 = 8;

/// The candidates: the owner's newest [`SEARCH_WEEKS`] weeks (from the week of the newest turn
/// in the range) one at a time, newest first, then, only when they hold fewer than `$4`
/// matches, everything older in one scan (for a rare term, one GIN scan instead of one a week).
/// The heap rows read stay bounded whatever the table's size: a term common enough to have
/// `$4` matches in eight weeks stops there; one that is not has at most about
/// `$4 × weeks of history / 8` matches in all. (The older rows' bound is written so that no
/// index can take it: the planner would AND the GIN's few matches with the `created_at` index's
/// bitmap of most of the table. The weeks come out of `generate_series` newest
/// first, the nested loop and the `UNION ALL` keep that order, and the outer LIMIT stops them.)
const CANDIDATES_BY_WEEK: &str = "\
    WITH newest AS (SELECT date_trunc('week', \
        (SELECT n.created_at FROM conversations n WHERE n.owner = $7::text \
            AND ($2::timestamptz IS NULL OR n.created_at >= $2::timestamptz) \
            AND ($3::timestamptz IS NULL OR n.created_at < $3::timestamptz) \
         ORDER BY n.created_at DESC, n.id DESC LIMIT 1) AT TIME ZONE 'UTC') AS week) \
    (SELECT m.id, m.created_at, m.search \
     FROM newest, generate_series(newest.week, newest.week - interval '{weeks} weeks', \
         interval '-1 week') AS w(week) \
     CROSS JOIN LATERAL ({week_matches}) m) \
    UNION ALL \
    (SELECT c.id, c.created_at, c.search FROM conversations c \
     WHERE c.created_at + interval '0 s' \
             < ((SELECT week FROM newest) - interval '{weeks} weeks') AT TIME ZONE 'UTC' \
       AND c.search @@ websearch_to_tsquery('{config}'::regconfig, $1::text) \
       AND c.owner = $7::text \
       AND ($2::timestamptz IS NULL OR c.created_at >= $2::timestamptz) \
     ORDER BY c.created_at DESC, c.id DESC \
     LIMIT $4::int8) \
    LIMIT $4::int8";

/// The candidates among the newest `$8` rows of the owner in the range (the phrase window).
const CANDIDATES_IN_WINDOW: &str = "\
    SELECT c.id, c.created_at, c.search FROM \
        (SELECT id, owner, created_at, search FROM conversations \
         WHERE owner = $7::text \
           AND ($2::timestamptz IS NULL OR created_at >= $2::timestamptz) \
           AND ($3::timestamptz IS NULL OR created_at < $3::timestamptz) \
         ORDER BY created_at DESC, id DESC LIMIT $8::int8) c \
    WHERE c.search @@ websearch_to_tsquery('{config}'::regconfig, $1::text) \
    ORDER BY c.created_at DESC, c.id DESC \
    LIMIT $4::int8";

/// The search over every week of the owner's turns with text search configuration `config`
/// (written into the SQL as a literal, so PostgreSQL computes the tsquery once, not once per
/// row).
pub fn search_sql(config: &str) -> String {
    search_template(config, false).replace("{columns}", &columns())
}

/// The search over the newest `$8` rows only (in the date range), read newest first. Used first
/// for phrase queries, whose match count PostgreSQL underestimates (the words of a phrase occur
/// together far more often than independence predicts): it would read every match of the words
/// through the GIN index and recheck each. When the window holds all `$4` candidates the answer
/// is the same as [`search_sql`]'s.
pub fn search_window_sql(config: &str) -> String {
    search_template(config, true).replace("{columns}", &columns())
}

/// The search by week, or over the phrase window (`window`), with its selected columns left as
/// `{columns}` for the backend to fill in.
pub(crate) fn search_template(config: &str, window: bool) -> String {
    let candidates = if window {
        CANDIDATES_IN_WINDOW.to_owned()
    } else {
        CANDIDATES_BY_WEEK
            .replace("{week_matches}", WEEK_MATCHES)
            .replace("{weeks}", &(SEARCH_WEEKS - 1).to_string())
    };
    SEARCH_TEMPLATE
        .replace("{candidates}", &candidates)
        .replace("{config}", config)
}

/// How many of the newest rows the phrase window reads.
pub(crate) const PHRASE_WINDOW_ROWS: i64 = 50_000;
