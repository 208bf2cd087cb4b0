-- What a turn that used tools did: the assistant's calls (`[{"id","name","arguments"}]`) and
-- the names of the tools its request offered. Both null on a turn without tools.
ALTER TABLE conversations ADD COLUMN tool_calls jsonb;
ALTER TABLE conversations ADD COLUMN tools jsonb;
-- A /v1 prompt that is not all text (images): its content parts, images capped at 64 KB.
ALTER TABLE conversations ADD COLUMN prompt_parts jsonb;

-- Search finds a turn by the tools it called and their arguments too (weight C): the search
-- column is rebuilt with them (`local migrate` rebuilds it again when SEARCH_CONFIG differs).
-- A jsonb's string values (ids, names, the arguments' text) are what to_tsvector reads.
DROP INDEX IF EXISTS conversations_search_idx;
ALTER TABLE conversations DROP COLUMN search;
ALTER TABLE conversations ADD COLUMN search tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('english'::regconfig, left(prompt, 32000)), 'A') ||
    setweight(to_tsvector('english'::regconfig, left(response, 100000)), 'B') ||
    setweight(to_tsvector('english'::regconfig, coalesce(tool_calls, '[]'::jsonb)), 'C')
) STORED;
CREATE INDEX conversations_search_idx ON conversations USING gin (search);
