-- Guardrails: a prompt they refuse is still recorded, as 'blocked'; every verdict is kept in
-- `flags` (a JSON array of {"check", "verdict", "detail"}).
ALTER TABLE conversations DROP CONSTRAINT conversations_status_check;
ALTER TABLE conversations ADD CONSTRAINT conversations_status_check
    CHECK (status IN ('streaming', 'complete', 'partial', 'failed', 'blocked'));
ALTER TABLE conversations ADD COLUMN flags jsonb NOT NULL DEFAULT '[]';
