-- Roles by what each function may do, so that only the migrating user owns the schema:
--   llm_stream_reader          reads (the get and search functions, and history with the next);
--   llm_stream_thread_deleter  deletes threads (the history function);
--   llm_stream_writer          writes turns (the stream function): no schema changes.
-- Login roles join them with llm_stream_login() (the migrate function does it for the logins
-- the deployment names). Roles belong to the whole cluster: creating one that exists already
-- (another database of the cluster made it, maybe at this very moment) is fine. Without the
-- privilege to create roles (a migrating user without CREATEROLE) this is skipped with a notice,
-- and every function connects as the migrating user, as before.
DO $$
BEGIN
    BEGIN
        CREATE ROLE llm_stream_reader NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
    BEGIN
        CREATE ROLE llm_stream_thread_deleter NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
    BEGIN
        CREATE ROLE llm_stream_writer NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
    GRANT SELECT ON conversations, threads, turn_chunks, api_keys, deleted_threads
        TO llm_stream_reader;
    GRANT DELETE ON threads, conversations, turn_chunks TO llm_stream_thread_deleter;
    GRANT INSERT, DELETE ON deleted_threads TO llm_stream_thread_deleter;
    GRANT SELECT, INSERT, UPDATE, DELETE ON conversations, threads, turn_chunks, deleted_threads
        TO llm_stream_writer;
    GRANT SELECT ON api_keys TO llm_stream_writer;
    -- Tables later migrations add: read by the readers, written by the writer.
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO llm_stream_reader;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public
        GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO llm_stream_writer;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'roles not created: the migrating user may not create roles';
END
$$;

-- Makes (or updates) login role p_name with password p_password, member of the roles in
-- p_groups (comma-separated). Only its owner (the migrating user) may call it.
CREATE FUNCTION llm_stream_login(p_name text, p_password text, p_groups text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    g text;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = p_name) THEN
        EXECUTE format('ALTER ROLE %I LOGIN PASSWORD %L', p_name, p_password);
    ELSE
        EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L', p_name, p_password);
    END IF;
    FOREACH g IN ARRAY string_to_array(p_groups, ',') LOOP
        EXECUTE format('GRANT %I TO %I', trim(g), p_name);
    END LOOP;
END
$$;
REVOKE EXECUTE ON FUNCTION llm_stream_login(text, text, text) FROM PUBLIC;
