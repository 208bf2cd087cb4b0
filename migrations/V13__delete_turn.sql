-- Deletes turn p_id of p_owner, when no later turn continues it: 'deleted', 'not_found',
-- 'running' (it has not ended) or 'continued' (a later turn names it as its previous one). A
-- thread's only turn takes its thread with it (through `delete_thread`, which leaves the
-- tombstone a still-running writer checks); else the thread counts one turn less and its latest
-- activity is that of the turns that stay. Its usage stays counted (`usage_daily`).
CREATE FUNCTION delete_turn(p_id uuid, p_owner text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_thread uuid;
    v_status text;
BEGIN
    SELECT thread_id, status INTO v_thread, v_status
    FROM conversations WHERE id = p_id AND owner = p_owner;
    IF NOT FOUND THEN
        RETURN 'not_found';
    END IF;
    IF v_status = 'streaming' THEN
        RETURN 'running';
    END IF;
    -- The thread's row first: a turn being added to it waits, then sees what follows.
    PERFORM 1 FROM threads WHERE id = v_thread FOR UPDATE;
    IF EXISTS (SELECT 1 FROM conversations WHERE thread_id = v_thread AND previous_id = p_id) THEN
        RETURN 'continued';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM conversations WHERE thread_id = v_thread AND id <> p_id) THEN
        PERFORM delete_thread(v_thread, p_owner);
        RETURN 'deleted';
    END IF;
    DELETE FROM conversations WHERE id = p_id AND owner = p_owner;
    UPDATE threads SET turns = turns - 1,
        updated_at = (SELECT max(created_at) FROM conversations WHERE thread_id = v_thread)
    WHERE id = v_thread;
    RETURN 'deleted';
END
$$;
