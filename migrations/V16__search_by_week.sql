-- Migration V16: search reads an owner's matches a week at a time, newest week first.
-- A search keeps the newest matches (SEARCH_CANDIDATES, 1,000) and ranks them. For a term in
-- 1% of turns the GIN index gave every match of the whole table, and PostgreSQL read each one's
-- row to learn its owner and time before keeping the newest 1,000: 10,033 rows at 1M turns,
-- 100,000 at 10M (make bench-scale; docs/performance.md, Reads at scale). The index now also
-- holds each turn's owner and UTC week (btree_gin's operator classes), so that one GIN scan
-- answers "this owner's matches in this week" and the search stops at the week where it has its
-- candidates: the rows read are bounded by a week's matches, not by the table's. For a broad
-- term (in a quarter of the turns) reading all of a week's matches would be the slow way: a
-- btree over owner and week, ordered by time, lets the planner walk the week newest first
-- instead and stop at the last candidate, as it walked the owner's turns before. The GIN index keeps
-- its name (the search column's rebuild, `local migrate` with another SEARCH_CONFIG, makes the
-- same index). btree_gin is a trusted extension (PostgreSQL 13+, RDS and Aurora): the owner of
-- the database may create it; without it the plain index stays and search is as before.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS btree_gin;
    DROP INDEX IF EXISTS conversations_search_idx;
    CREATE INDEX conversations_search_idx ON conversations USING gin (
        owner, search, (date_trunc('week', created_at AT TIME ZONE 'UTC')));
EXCEPTION WHEN insufficient_privilege OR feature_not_supported OR undefined_file THEN
    RAISE NOTICE 'btree_gin not available: search keeps its plain index';
END
$$;

CREATE INDEX conversations_owner_week_idx ON conversations (
    owner, (date_trunc('week', created_at AT TIME ZONE 'UTC')), created_at DESC, id DESC);

-- No JIT for this database's sessions (the pool sets it on its own connections; this reaches
-- the Data API's): compiling costs tens of milliseconds, and the search's week-by-week plan is
-- costed as if it read a thousand weeks (a set-returning function's default estimate), which
-- passes `jit_above_cost` for a rare term. As in V5, skipped without the privilege.
DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET jit = off', current_database());
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'jit not turned off: the migrating user does not own the database';
END
$$;
