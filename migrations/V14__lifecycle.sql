-- Data lifecycle: retention (`purge_batch`, `purge_turn_logs`), erasure (`erase_owner`) and
-- deleting one turn from the history function (its login may now update a thread's counters).
-- Every function works in bounded batches, one short transaction each: the caller loops.

-- Threads by latest activity across owners: the purge finds the oldest without a scan.
CREATE INDEX threads_updated_idx ON threads (updated_at, id);

-- An audit of erasures: never the owner, only its SHA-256, and what was removed.
CREATE TABLE erasures (
    owner_sha256 bytea       NOT NULL,
    erased_at    timestamptz NOT NULL DEFAULT now(),
    threads      bigint      NOT NULL,
    turns        bigint      NOT NULL,
    keys         bigint      NOT NULL,
    usage_rows   bigint      NOT NULL
);

-- One batch of the purge: whole threads (of owner p_owner; null: of everyone) whose latest turn
-- started before p_before, oldest first, at most p_max turns in all. A thread is only ever
-- removed whole, while its row is locked, so no kept turn continues a removed one; a turn added
-- to it meanwhile makes it recent (its row is re-read under the lock) and it stays. A thread of
-- more than p_max turns loses its newest p_max in a batch of its own (what stays is the start of
-- its chains, never a dangling middle) and goes at its last batch. Tombstones (as `delete_thread`
-- leaves) make a writer still running in a removed thread save nothing. Usage rollups are not
-- touched: spent is spent. With p_dry, nothing changes and the counts are what would go.
CREATE FUNCTION purge_batch(p_before timestamptz, p_owner text, p_max integer, p_dry boolean,
    OUT threads_removed bigint, OUT turns_removed bigint)
LANGUAGE plpgsql SET plan_cache_mode = auto AS $$
DECLARE
    t record;
    n bigint;
    room bigint := greatest(p_max, 1);
BEGIN
    threads_removed := 0;
    turns_removed := 0;
    IF p_dry THEN
        SELECT count(*), coalesce(sum(turns), 0) INTO threads_removed, turns_removed
        FROM threads WHERE updated_at < p_before AND (p_owner IS NULL OR owner = p_owner);
        RETURN;
    END IF;
    FOR t IN SELECT id, turns FROM threads
             WHERE updated_at < p_before AND (p_owner IS NULL OR owner = p_owner)
             ORDER BY updated_at, id LIMIT room FOR UPDATE SKIP LOCKED LOOP
        IF t.turns <= room THEN
            INSERT INTO deleted_threads (id) VALUES (t.id) ON CONFLICT (id) DO NOTHING;
            DELETE FROM threads WHERE id = t.id;
            DELETE FROM conversations WHERE thread_id = t.id;
            GET DIAGNOSTICS n = ROW_COUNT;
            threads_removed := threads_removed + 1;
            turns_removed := turns_removed + n;
            room := room - greatest(t.turns, n, 1);
        ELSIF turns_removed = 0 THEN
            DELETE FROM conversations WHERE id IN (
                SELECT id FROM conversations WHERE thread_id = t.id
                ORDER BY created_at DESC, id DESC LIMIT room);
            GET DIAGNOSTICS n = ROW_COUNT;
            UPDATE threads SET turns = turns - n WHERE id = t.id;
            turns_removed := n;
            room := 0;
        END IF;
        EXIT WHEN room <= 0;
    END LOOP;
    DELETE FROM deleted_threads WHERE deleted_at < now() - interval '1 day';
END
$$;

-- The turn log's leftovers, at most p_max turns' worth: pieces of a turn that has ended (a
-- checkpoint whose commit landed after the final save) are dropped; a turn abandoned by its
-- writer (still `streaming`, started more than p_stale_s seconds ago: longer than any stream may
-- run) has its log folded into `response` and dropped. Its status stays: readers already show it
-- as interrupted, and a late final record (`local replay`) still settles and counts it. Returns
-- how many turns' logs went.
CREATE FUNCTION purge_turn_logs(p_stale_s bigint, p_max integer) RETURNS bigint
LANGUAGE plpgsql SET plan_cache_mode = auto AS $$
DECLARE
    n bigint;
BEGIN
    WITH logged AS (
        SELECT DISTINCT k.turn_id FROM turn_chunks k
    ), gone AS (
        SELECT l.turn_id, c.status FROM logged l JOIN conversations c ON c.id = l.turn_id
        WHERE c.status <> 'streaming'
           OR c.created_at < now() - make_interval(secs => p_stale_s)
        LIMIT greatest(p_max, 1)
    ), folded AS (
        UPDATE conversations c SET response = coalesce((
            SELECT string_agg(k.text, '' ORDER BY k.position) FROM turn_chunks k
            WHERE k.turn_id = c.id), c.response)
        FROM gone g WHERE c.id = g.turn_id AND g.status = 'streaming'
        RETURNING c.id
    ), dropped AS (
        DELETE FROM turn_chunks k USING gone g
        WHERE k.turn_id = g.turn_id
          AND (g.status <> 'streaming' OR EXISTS (SELECT 1 FROM folded f WHERE f.id = g.turn_id))
        RETURNING k.turn_id
    )
    SELECT count(DISTINCT turn_id) INTO n FROM dropped;
    RETURN n;
END
$$;

-- Finishes erasing owner p_owner once `purge_batch` (with p_before 'infinity') has removed its
-- threads: any turn of it still left (at most p_max), then its keys (their counters, windows and
-- reservations with them), its usage rollups and reservations, and records the erasure by the
-- owner's hash. Returns 'more N' (N turns removed; call again) while turns remain, else the
-- counts as 'done KEYS USAGE_ROWS'.
CREATE FUNCTION erase_owner(p_owner text, p_max integer, p_threads bigint, p_turns bigint)
RETURNS text LANGUAGE plpgsql SET plan_cache_mode = auto AS $$
DECLARE
    n bigint;
    v_keys bigint;
    v_usage bigint;
BEGIN
    DELETE FROM conversations WHERE id IN (
        SELECT id FROM conversations WHERE owner = p_owner LIMIT greatest(p_max, 1));
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        RETURN format('more %s', n);
    END IF;
    DELETE FROM threads WHERE owner = p_owner;
    DELETE FROM reservations WHERE owner = p_owner;
    DELETE FROM api_keys WHERE owner = p_owner;
    GET DIAGNOSTICS v_keys = ROW_COUNT;
    DELETE FROM usage_daily WHERE owner = p_owner;
    GET DIAGNOSTICS v_usage = ROW_COUNT;
    INSERT INTO erasures (owner_sha256, threads, turns, keys, usage_rows)
    VALUES (sha256(convert_to(p_owner, 'UTF8')), p_threads, p_turns, v_keys, v_usage);
    RETURN format('done %s %s', v_keys, v_usage);
END
$$;

-- The history function deletes one turn (`DELETE /history/{id}`, through `delete_turn`), which
-- updates its thread's count and latest activity.
DO $$
BEGIN
    GRANT UPDATE ON threads TO llm_stream_thread_deleter;
EXCEPTION WHEN undefined_object OR insufficient_privilege THEN
    RAISE NOTICE 'grant skipped: the roles of V9 are not here';
END
$$;
