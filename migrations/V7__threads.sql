-- Threads: a turn continues another (`previous_id`), all turns of a conversation share the
-- first turn's id (`thread_id`), and two turns with one `previous_id` are branches. `system`
-- holds the instructions the turn ran under (its own, or inherited from the nearest turn up its
-- chain that had some); `messages` the earlier messages a /v1/chat/completions call sent;
-- `context_turns` how many previous turns the provider received.
ALTER TABLE conversations ADD COLUMN thread_id uuid;
ALTER TABLE conversations ADD COLUMN previous_id uuid;
ALTER TABLE conversations ADD COLUMN system text;
ALTER TABLE conversations ADD COLUMN messages jsonb;
ALTER TABLE conversations ADD COLUMN context_turns integer;
-- Every existing conversation becomes a thread of one turn.
UPDATE conversations SET thread_id = id WHERE thread_id IS NULL;
ALTER TABLE conversations ALTER COLUMN thread_id SET NOT NULL;
-- A thread's turns, oldest first.
CREATE INDEX conversations_thread_idx ON conversations (thread_id, created_at, id);

-- A turn written without a thread (a first turn from an older writer, a bulk load) is its own.
CREATE FUNCTION conversations_default_thread() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.thread_id IS NULL THEN
        NEW.thread_id := NEW.id;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER conversations_default_thread BEFORE INSERT ON conversations
    FOR EACH ROW EXECUTE FUNCTION conversations_default_thread();

-- One row per thread, kept in step with its turns by the trigger below, so that the list of an
-- owner's threads by latest activity walks an index.
CREATE TABLE threads (
    id         uuid        PRIMARY KEY,
    owner      text        NOT NULL,
    -- The first prompt, cut to 80 characters.
    title      text        NOT NULL,
    turns      integer     NOT NULL,
    created_at timestamptz NOT NULL,
    -- When its latest turn started.
    updated_at timestamptz NOT NULL
);
CREATE INDEX threads_owner_updated_idx ON threads (owner, updated_at DESC, id DESC);
INSERT INTO threads (id, owner, title, turns, created_at, updated_at)
    SELECT id, owner, left(prompt, 80), 1, created_at, created_at FROM conversations;

-- Threads deleted: a turn of one still running when it was deleted must not bring it back when
-- its end is saved. Rows older than a day are dropped by the next deletion.
CREATE TABLE deleted_threads (
    id         uuid        PRIMARY KEY,
    deleted_at timestamptz NOT NULL DEFAULT now()
);

-- A new turn counts in its thread (which it creates when it is the first).
CREATE FUNCTION threads_count_turn() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO threads AS t (id, owner, title, turns, created_at, updated_at)
    VALUES (NEW.thread_id, NEW.owner, left(NEW.prompt, 80), 1, NEW.created_at, NEW.created_at)
    ON CONFLICT (id) DO UPDATE SET
        turns = t.turns + 1,
        updated_at = greatest(t.updated_at, EXCLUDED.updated_at),
        created_at = least(t.created_at, EXCLUDED.created_at),
        title = CASE WHEN NEW.id = NEW.thread_id THEN EXCLUDED.title ELSE t.title END;
    RETURN NULL;
END
$$;
CREATE TRIGGER conversations_count_turn AFTER INSERT ON conversations
    FOR EACH ROW EXECUTE FUNCTION threads_count_turn();
