-- Conversations: one row per POST /stream, written when the stream starts and finished at its end.
CREATE TABLE conversations (
    id                uuid        PRIMARY KEY,
    prompt            text        NOT NULL,
    response          text        NOT NULL DEFAULT '',
    status            text        NOT NULL DEFAULT 'streaming'
                      CHECK (status IN ('streaming', 'complete', 'partial', 'failed')),
    error             text,
    provider          text        NOT NULL,
    model             text        NOT NULL,
    prompt_tokens     integer,
    completion_tokens integer,
    total_tokens      integer,
    ttfb_ms           integer,
    duration_ms       integer,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Newest first, ties broken by id: serves both offset pages and keyset cursors.
CREATE INDEX conversations_created_at_id_idx ON conversations (created_at DESC, id DESC);
