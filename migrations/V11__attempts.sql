-- With routing (LLM_CONFIG): every target a turn tried, in order
-- (`[{"provider","model","status"?,"error_code"?,"ms","chars"}]`); null without it.
ALTER TABLE conversations ADD COLUMN attempts jsonb;
