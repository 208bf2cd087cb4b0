-- A running turn's text as an append-only log: each checkpoint appends the text stored since
-- the previous one (O(new text), never a rewrite of the whole answer and its search vector),
-- clients that re-attach from another process read it from a position, and the final save
-- moves it into `response` and drops it. Also: cancel requests (any process may ask, the
-- generating one reads the flag at each checkpoint), the `cancelled` status, and the provider's
-- finish reason.
ALTER TABLE conversations DROP CONSTRAINT conversations_status_check;
ALTER TABLE conversations ADD CONSTRAINT conversations_status_check
    CHECK (status IN ('streaming', 'complete', 'partial', 'failed', 'blocked', 'cancelled'));
ALTER TABLE conversations ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false;
ALTER TABLE conversations ADD COLUMN finish_reason text;

CREATE TABLE turn_chunks (
    turn_id    uuid        NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    -- Where the text starts, in characters of the turn's stored text.
    position   bigint      NOT NULL,
    text       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (turn_id, position)
);
