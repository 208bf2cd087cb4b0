-- A running turn's heartbeat: each checkpoint sets it (also when no new text came), so a turn
-- whose process died (killed, out of memory) reads as interrupted within a few checkpoint
-- intervals instead of after the longest a stream may run.
ALTER TABLE conversations ADD COLUMN heartbeat_at timestamptz;

-- No turn of a deleted thread is ever written. The check runs under a lock on the thread's row
-- and with a fresh look at the tombstones, so an insert that races a deletion waits for it and
-- then sees it (a check inside the inserting statement would use that statement's older view).
-- Runs after conversations_default_thread (triggers fire in name order).
CREATE FUNCTION conversations_thread_alive() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM threads WHERE id = NEW.thread_id FOR KEY SHARE;
    IF EXISTS (SELECT 1 FROM deleted_threads WHERE id = NEW.thread_id) THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER conversations_thread_alive BEFORE INSERT ON conversations
    FOR EACH ROW EXECUTE FUNCTION conversations_thread_alive();

-- Deletes thread p_id of p_owner and every turn of it (their logs go with them) and leaves a
-- tombstone; drops tombstones older than a day. Each statement sees what committed before it
-- ran: the turns are deleted after the thread's row is, so a turn whose insert held that row
-- is seen and deleted, and one that waited for it is refused by the trigger above.
CREATE FUNCTION delete_thread(p_id uuid, p_owner text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM threads WHERE id = p_id AND owner = p_owner;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO deleted_threads (id) VALUES (p_id) ON CONFLICT (id) DO NOTHING;
    DELETE FROM conversations WHERE thread_id = p_id AND owner = p_owner;
    DELETE FROM deleted_threads WHERE deleted_at < now() - interval '1 day';
    RETURN true;
END
$$;
