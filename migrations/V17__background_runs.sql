-- Migration V17: background responses in Lambda. A `POST /v1/responses` with `background: true`
-- answered by a Lambda invocation cannot go on generating once its response is sent (Lambda
-- freezes the process), so it writes the turn's row, leaves here what the generation needs (the
-- provider request and the turn as it starts, as JSON) under the SHA-256 of a one-time token,
-- and invokes its own function asynchronously with the turn's id and the token. That invocation
-- takes the row (one DELETE: a second delivery of the same event finds nothing) and generates
-- the turn as any other, checkpoints and final record included. A row lives from the create call
-- to the start of its generation (well under a second); a turn deleted before that takes its row
-- with it.
CREATE TABLE background_runs (
    turn_id      uuid        PRIMARY KEY REFERENCES conversations (id) ON DELETE CASCADE,
    token_sha256 text        NOT NULL,
    job          jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- The stream function's role queues and takes runs; nobody else reads them.
DO $$
BEGIN
    GRANT SELECT, INSERT, DELETE ON background_runs TO llm_stream_writer;
    REVOKE ALL ON background_runs FROM llm_stream_reader;
EXCEPTION WHEN undefined_object THEN
    RAISE NOTICE 'roles not granted: migration V9 did not create them';
END
$$;
