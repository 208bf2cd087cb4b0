-- API keys (only their SHA-256 digests are stored) and the owner of each conversation.
CREATE TABLE api_keys (
    id         uuid        PRIMARY KEY,
    owner      text        NOT NULL,
    name       text        NOT NULL,
    digest     bytea       NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

-- Conversations made before keys existed, or with AUTH=off, belong to 'local'.
ALTER TABLE conversations ADD COLUMN owner text NOT NULL DEFAULT 'local';

-- Each owner's conversations newest first: history pages and cursors per owner.
CREATE INDEX conversations_owner_created_at_id_idx
    ON conversations (owner, created_at DESC, id DESC);
