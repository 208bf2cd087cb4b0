-- Migration V15: the usage rollup in shards, and the settling trigger only when it settles.
-- The daily rollup in shards. Every turn's final write adds to its owner's row for the day and
-- model (`llm_account`, from the `conversations_settle` trigger), and holds that row's lock until
-- it commits: with many turns of one owner and model ending at once, they queued on that one
-- row (`make load`: 200 concurrent streams spent 38% of the sampled time of their final writes
-- waiting on it). Each connection now adds to one of 16 rows of the day, picked by its backend:
-- turns ending on different connections no longer wait for each other. Readers sum the rows, as
-- they already did over keys.
ALTER TABLE usage_daily ADD COLUMN shard smallint NOT NULL DEFAULT 0;
ALTER TABLE usage_daily DROP CONSTRAINT usage_daily_owner_day_model_key_id_key;
ALTER TABLE usage_daily ADD CONSTRAINT usage_daily_owner_day_model_key_id_shard_key
    UNIQUE NULLS NOT DISTINCT (owner, day, model, key_id, shard);

CREATE OR REPLACE FUNCTION llm_account(p_owner text, p_day date, p_model text, p_key uuid,
    p_requests bigint, p_prompt bigint, p_completion bigint, p_usd numeric)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO usage_daily AS u (owner, day, model, key_id, shard, requests, prompt_tokens,
        completion_tokens, cost_usd)
    VALUES (p_owner, p_day, p_model, p_key, (pg_backend_pid() % 16)::smallint, p_requests,
        p_prompt, p_completion, p_usd)
    ON CONFLICT (owner, day, model, key_id, shard) DO UPDATE SET
        requests = u.requests + EXCLUDED.requests,
        prompt_tokens = u.prompt_tokens + EXCLUDED.prompt_tokens,
        completion_tokens = u.completion_tokens + EXCLUDED.completion_tokens,
        cost_usd = u.cost_usd + EXCLUDED.cost_usd
$$;

-- The settling trigger runs only when a turn's final record is written: the start row (status
-- `streaming`) and later writes of an ended turn no longer call it just to return.
DROP TRIGGER conversations_settle ON conversations;
CREATE TRIGGER conversations_settle AFTER INSERT ON conversations
    FOR EACH ROW WHEN (NEW.status NOT IN ('streaming', 'blocked'))
    EXECUTE FUNCTION conversations_settle();
CREATE TRIGGER conversations_settle_end AFTER UPDATE OF status ON conversations
    FOR EACH ROW WHEN (OLD.status = 'streaming' AND NEW.status NOT IN ('streaming', 'blocked'))
    EXECUTE FUNCTION conversations_settle();
