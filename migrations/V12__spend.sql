-- Spend control: limits on a key, reservations held in this database (no second store), the
-- cost of each turn and a daily rollup of usage.
--
-- How a limited request is admitted: `llm_reserve` locks the key's spend row (a row lock, held
-- for the statement only: no advisory locks, nothing that pins an RDS Proxy session), settles
-- the key's reservations whose process died, then counts what the key has in flight and in the
-- last minute against its limits, and either inserts the request's reservation (its worst case)
-- or names the limit that refuses it. The lock serialises admissions of one key, and every
-- statement of the function runs after it with a fresh view of what committed before, so two
-- processes can never both take the last unit of a limit.
--
-- How a turn settles: the statement that writes its final record fires
-- `conversations_settle`, which replaces the reservation by the actual usage (in the same
-- transaction: the final event is sent after it) and adds the turn to `usage_daily`. A turn
-- that is never finished (its process died) is settled at the next admission of its key, from
-- what was stored of it.

ALTER TABLE api_keys
    ADD COLUMN rpm integer CHECK (rpm > 0),
    ADD COLUMN tpm bigint CHECK (tpm > 0),
    ADD COLUMN concurrency integer CHECK (concurrency > 0),
    ADD COLUMN budget_usd numeric CHECK (budget_usd >= 0),
    ADD COLUMN budget_tokens bigint CHECK (budget_tokens >= 0),
    ADD COLUMN period text NOT NULL DEFAULT 'month' CHECK (period IN ('day', 'month', 'total'));

-- The key a turn was made with (null: AUTH=off or AUTH_TOKEN) and what it cost (null: the
-- model has no price).
ALTER TABLE conversations ADD COLUMN key_id uuid;
ALTER TABLE conversations ADD COLUMN cost_usd double precision;

-- A limited key's counters: what it has spent in its current period (day and month in UTC),
-- and what its answers running now hold (their number and worst cases). The row `llm_reserve`
-- locks; every counter here is kept by the statements that reserve and settle, so admitting a
-- request never scans its key's history.
CREATE TABLE key_spend (
    key_id          uuid        PRIMARY KEY REFERENCES api_keys (id) ON DELETE CASCADE,
    period_start    timestamptz NOT NULL,
    spent_usd       numeric     NOT NULL DEFAULT 0,
    spent_tokens    bigint      NOT NULL DEFAULT 0,
    running         bigint      NOT NULL DEFAULT 0,
    reserved_usd    numeric     NOT NULL DEFAULT 0,
    reserved_tokens bigint      NOT NULL DEFAULT 0
);

-- A limited key's requests and tokens by second, for `rpm` and `tpm`: the window is the last 60
-- seconds, sliding a second at a time (at most 61 rows a key; older ones are dropped as the key
-- is used). A request's tokens count at its worst case until it settles, then at its usage.
CREATE TABLE key_window (
    key_id   uuid        NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    second   timestamptz NOT NULL,
    requests bigint      NOT NULL DEFAULT 0,
    tokens   bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, second)
);

-- One request of a limited key: running, it holds its worst case (`tokens`, `usd`); settled, what
-- it settled at. Settled rows are dropped by later settlements of the key: a minute after their
-- turn settled them, a day after a lease did (its process died), so that a late final record
-- (`local replay`) corrects that settlement.
CREATE TABLE reservations (
    turn_id       uuid        PRIMARY KEY,
    key_id        uuid        NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    owner         text        NOT NULL,
    model         text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- The bound on the prompt's tokens and the output cap the request was reserved at.
    prompt_bound  bigint      NOT NULL,
    output_cap    bigint      NOT NULL,
    -- USD per million tokens at the reservation's model (null: no price).
    input_price   numeric,
    output_price  numeric,
    tokens        bigint      NOT NULL,
    usd           numeric     NOT NULL,
    -- Once settled from a lease: when, and the tokens and cost it settled at.
    settled_at    timestamptz,
    settled_by    text CHECK (settled_by IN ('turn', 'lease')),
    settled_prompt     bigint,
    settled_completion bigint,
    settled_usd        numeric
);
-- The running ones of a key, oldest first (the lease check walks them), and the settled ones by
-- when (the pruning walks them).
CREATE INDEX reservations_running_idx ON reservations (key_id, created_at)
    WHERE settled_at IS NULL;
CREATE INDEX reservations_settled_idx ON reservations (key_id, settled_at)
    WHERE settled_at IS NOT NULL;

-- Usage per owner, day (UTC, of the turn's start), model and key: what `GET /usage` reads. Kept
-- by the statements that end turns, never by a scan, and never reduced: deleting turns leaves
-- it as it is (spent is spent).
CREATE TABLE usage_daily (
    owner             text    NOT NULL,
    day               date    NOT NULL,
    model             text    NOT NULL,
    key_id            uuid,
    requests          bigint  NOT NULL DEFAULT 0,
    prompt_tokens     bigint  NOT NULL DEFAULT 0,
    completion_tokens bigint  NOT NULL DEFAULT 0,
    cost_usd          numeric NOT NULL DEFAULT 0,
    UNIQUE NULLS NOT DISTINCT (owner, day, model, key_id)
);

-- The start of the period `p` that `at` falls in.
CREATE FUNCTION llm_period_start(p text, at timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p
        WHEN 'day' THEN date_trunc('day', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
        WHEN 'month' THEN date_trunc('month', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
        ELSE '-infinity'::timestamptz
    END
$$;

-- Adds to the daily rollup.
CREATE FUNCTION llm_account(p_owner text, p_day date, p_model text, p_key uuid,
    p_requests bigint, p_prompt bigint, p_completion bigint, p_usd numeric)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO usage_daily AS u (owner, day, model, key_id, requests, prompt_tokens,
        completion_tokens, cost_usd)
    VALUES (p_owner, p_day, p_model, p_key, p_requests, p_prompt, p_completion, p_usd)
    ON CONFLICT (owner, day, model, key_id) DO UPDATE SET
        requests = u.requests + EXCLUDED.requests,
        prompt_tokens = u.prompt_tokens + EXCLUDED.prompt_tokens,
        completion_tokens = u.completion_tokens + EXCLUDED.completion_tokens,
        cost_usd = u.cost_usd + EXCLUDED.cost_usd
$$;

-- Settles reservation `p_turn` at the given usage (`p_by`: 'turn' or 'lease'): the key's spend,
-- its in-flight counters, its rate window and the rollup take the difference from what it held
-- (its worst case, or what a lease settled it at). One settled by its turn stays as it is.
-- Returns false when there is no such reservation.
-- Locks the key's counters before the reservation, in the order `llm_reserve` does.
CREATE FUNCTION llm_settle(p_turn uuid, p_prompt bigint, p_completion bigint, p_usd numeric,
    p_by text, p_model text) RETURNS boolean LANGUAGE plpgsql
-- The service's connections force custom plans (for the search query); these statements are
-- the same every call, and planning them anew each time would double the function's cost.
SET plan_cache_mode = auto AS $$
DECLARE
    r reservations%ROWTYPE;
    v_period text;
    was_prompt bigint := 0;
    was_completion bigint := 0;
    was_usd numeric := 0;
    was_tokens bigint;
    v_running bigint := 0;
    v_now timestamptz := clock_timestamp();
BEGIN
    SELECT * INTO r FROM reservations WHERE turn_id = p_turn;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM 1 FROM key_spend WHERE key_id = r.key_id FOR UPDATE;
    SELECT * INTO r FROM reservations WHERE turn_id = p_turn FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF r.settled_by = 'turn' THEN
        RETURN true;
    END IF;
    IF r.settled_at IS NULL THEN
        -- It leaves the answers running; its worst case leaves what they hold.
        v_running := 1;
        was_tokens := r.tokens;
    ELSE
        was_prompt := r.settled_prompt;
        was_completion := r.settled_completion;
        was_usd := r.settled_usd;
        was_tokens := was_prompt + was_completion;
    END IF;
    SELECT period INTO v_period FROM api_keys WHERE id = r.key_id;
    -- A new period starts from nothing.
    UPDATE key_spend SET
        spent_usd = CASE WHEN period_start < llm_period_start(v_period, v_now) THEN 0
                         ELSE spent_usd END + p_usd - was_usd,
        spent_tokens = CASE WHEN period_start < llm_period_start(v_period, v_now) THEN 0
                            ELSE spent_tokens END
                       + p_prompt + p_completion - was_prompt - was_completion,
        period_start = llm_period_start(v_period, v_now),
        running = running - v_running,
        reserved_usd = reserved_usd - CASE WHEN v_running = 1 THEN r.usd ELSE 0 END,
        reserved_tokens = reserved_tokens - CASE WHEN v_running = 1 THEN r.tokens ELSE 0 END
    WHERE key_id = r.key_id;
    -- Its second of the rate window, while the window still holds it.
    UPDATE key_window SET tokens = tokens + p_prompt + p_completion - was_tokens
    WHERE key_id = r.key_id AND second = date_trunc('second', r.created_at);
    PERFORM llm_account(r.owner, (r.created_at AT TIME ZONE 'UTC')::date,
        coalesce(p_model, r.model), r.key_id, v_running,
        p_prompt - was_prompt, p_completion - was_completion, p_usd - was_usd);
    UPDATE reservations SET settled_at = v_now, settled_by = p_by,
        settled_prompt = p_prompt, settled_completion = p_completion, settled_usd = p_usd
    WHERE turn_id = p_turn;
    DELETE FROM reservations
    WHERE key_id = r.key_id AND settled_at IS NOT NULL AND settled_at < v_now - interval '1 minute'
      AND (settled_by = 'turn' OR settled_at < v_now - interval '1 day');
    RETURN true;
END
$$;

-- When a turn's final record is written (once: a second write of it changes nothing): its
-- reservation settles to its usage, and the rollup counts it. A turn whose provider reported
-- no usage settles at its reservation's bound on the prompt and its answer's characters as
-- tokens (a token is at least a character), but a turn that failed with no text at nothing.
CREATE FUNCTION conversations_settle() RETURNS trigger LANGUAGE plpgsql
SET plan_cache_mode = auto AS $$
DECLARE
    r reservations%ROWTYPE;
    v_prompt bigint;
    v_completion bigint;
    v_usd numeric;
BEGIN
    IF NEW.status = 'streaming' OR NEW.status = 'blocked'
       OR (TG_OP = 'UPDATE' AND OLD.status <> 'streaming') THEN
        RETURN NULL;
    END IF;
    SELECT * INTO r FROM reservations WHERE turn_id = NEW.id;
    IF NOT FOUND THEN
        PERFORM llm_account(NEW.owner, (NEW.created_at AT TIME ZONE 'UTC')::date, NEW.model,
            NEW.key_id, 1, coalesce(NEW.prompt_tokens, 0), coalesce(NEW.completion_tokens, 0),
            coalesce(NEW.cost_usd, 0)::numeric);
        RETURN NULL;
    END IF;
    IF NEW.prompt_tokens IS NULL AND NEW.status = 'failed' AND NEW.response = '' THEN
        v_prompt := 0;
        v_completion := 0;
    ELSE
        v_prompt := coalesce(NEW.prompt_tokens, r.prompt_bound);
        v_completion := coalesce(NEW.completion_tokens,
            least(r.output_cap, char_length(NEW.response)));
    END IF;
    v_usd := coalesce(NEW.cost_usd::numeric,
        (v_prompt * coalesce(r.input_price, 0) + v_completion * coalesce(r.output_price, 0))
            / 1000000);
    PERFORM llm_settle(NEW.id, v_prompt, v_completion, v_usd, 'turn', NEW.model);
    RETURN NULL;
END
$$;
CREATE TRIGGER conversations_settle AFTER INSERT OR UPDATE OF status ON conversations
    FOR EACH ROW EXECUTE FUNCTION conversations_settle();

-- Admits a request of key `p_key` for turn `p_turn`, or names what refuses it. Its worst case:
-- `p_prompt` tokens of prompt (a bound) and `p_output` of answer, at `p_in`/`p_out` USD per
-- million tokens (null: no price; then a USD budget refuses it). A running reservation of this
-- key older than `p_stale` whose turn shows no life (no row, or a streaming row without a
-- heartbeat for `p_stale`), or older than `p_lease` in any case, is settled first from what was
-- stored. The cost does not grow with the key's traffic: counters on one row, at most 61
-- seconds of window, and only the running reservations older than `p_stale` walked. Returns
-- (refusal, retry_after_s, message): a null refusal admitted the request.
CREATE FUNCTION llm_reserve(p_key uuid, p_turn uuid, p_owner text, p_model text,
    p_prompt bigint, p_output bigint, p_in numeric, p_out numeric,
    p_stale interval, p_lease interval)
RETURNS TABLE (refusal text, retry_after integer, message text)
LANGUAGE plpgsql SET plan_cache_mode = auto AS $$
DECLARE
    k api_keys%ROWTYPE;
    s key_spend%ROWTYPE;
    d reservations%ROWTYPE;
    c_status text;
    c_beat timestamptz;
    v_now timestamptz := clock_timestamp();
    v_second timestamptz := date_trunc('second', clock_timestamp());
    v_tokens bigint := p_prompt + p_output;
    v_usd numeric := (p_prompt * coalesce(p_in, 0) + p_output * coalesce(p_out, 0)) / 1000000;
    v_est bigint;
    n_window bigint;
    t_window bigint;
    first_in_window timestamptz;
    v_next timestamptz;
    v_wait integer;
    v_settled boolean := false;
    v_stale_window boolean;
    both_rows record;
BEGIN
    -- The key's counters, locked, and its limits: from here on every statement sees what
    -- committed before it ran, and the admissions of this key are one at a time.
    SELECT s0 AS sp, k0 AS ak INTO both_rows
    FROM key_spend s0 JOIN api_keys k0 ON k0.id = s0.key_id
    WHERE s0.key_id = p_key FOR UPDATE OF s0;
    IF NOT FOUND THEN
        INSERT INTO key_spend (key_id, period_start)
        SELECT id, '-infinity' FROM api_keys WHERE id = p_key
        ON CONFLICT (key_id) DO NOTHING;
        SELECT s0 AS sp, k0 AS ak INTO both_rows
        FROM key_spend s0 JOIN api_keys k0 ON k0.id = s0.key_id
        WHERE s0.key_id = p_key FOR UPDATE OF s0;
        IF NOT FOUND THEN
            RETURN QUERY SELECT NULL::text, NULL::integer, NULL::text;
            RETURN;
        END IF;
    END IF;
    s := both_rows.sp;
    k := both_rows.ak;
    -- A USD budget cannot be held on a model without a price: refused, naming it.
    IF k.budget_usd IS NOT NULL AND (p_in IS NULL OR p_out IS NULL) THEN
        RETURN QUERY SELECT 'model_not_priced', NULL::integer,
            format('the model %s has no price, and this key has a budget in USD '
                   '(set one in LLM_PRICES)', p_model);
        RETURN;
    END IF;

    -- Reservations whose process died settle from what their turn stored.
    FOR d IN SELECT * FROM reservations
             WHERE key_id = p_key AND settled_at IS NULL AND created_at < v_now - p_stale
    LOOP
        c_status := NULL;
        c_beat := NULL;
        SELECT status, coalesce(heartbeat_at, created_at) INTO c_status, c_beat
        FROM conversations WHERE id = d.turn_id;
        CONTINUE WHEN coalesce(c_status = 'streaming' AND c_beat > v_now - p_stale
                               AND d.created_at > v_now - p_lease, false);
        v_est := least(d.output_cap, coalesce(
            (SELECT sum(char_length(t.text)) FROM turn_chunks t WHERE t.turn_id = d.turn_id),
            0));
        PERFORM llm_settle(d.turn_id, d.prompt_bound, v_est,
            (d.prompt_bound * coalesce(d.input_price, 0) + v_est * coalesce(d.output_price, 0))
                / 1000000,
            'lease', NULL);
        v_settled := true;
    END LOOP;

    IF v_settled THEN
        SELECT * INTO s FROM key_spend WHERE key_id = p_key;
    END IF;
    IF s.period_start < llm_period_start(k.period, v_now) THEN
        s.spent_usd := 0;
        s.spent_tokens := 0;
    END IF;
    n_window := 0;
    t_window := 0;
    IF k.rpm IS NOT NULL OR k.tpm IS NOT NULL THEN
        -- The window's seconds (at most 62 rows: the ones that left it are dropped below).
        SELECT coalesce(sum(requests) FILTER (WHERE second > v_second - interval '61 s'), 0),
               coalesce(sum(tokens) FILTER (WHERE second > v_second - interval '61 s'), 0),
               min(second) FILTER (WHERE second > v_second - interval '61 s'),
               coalesce(bool_or(second <= v_second - interval '61 s'), false)
        INTO n_window, t_window, first_in_window, v_stale_window
        FROM key_window WHERE key_id = p_key;
        IF v_stale_window THEN
            DELETE FROM key_window WHERE key_id = p_key AND second <= v_second - interval '61 s';
        END IF;
    END IF;
    -- Seconds until the oldest second of the window leaves it.
    v_wait := greatest(1, ceil(extract(epoch FROM
        coalesce(first_in_window, v_second) + interval '61 s' - v_now))::integer);
    v_next := CASE k.period
        WHEN 'day' THEN llm_period_start('day', v_now) + interval '1 day'
        WHEN 'month' THEN llm_period_start('month', v_now) + interval '1 month'
        ELSE NULL END;

    IF k.concurrency IS NOT NULL AND s.running >= k.concurrency THEN
        RETURN QUERY SELECT 'rate_limited', 1,
            format('this key may run %s answers at once', k.concurrency);
        RETURN;
    END IF;
    IF k.rpm IS NOT NULL AND n_window >= k.rpm THEN
        RETURN QUERY SELECT 'rate_limited', v_wait,
            format('this key may make %s requests a minute', k.rpm);
        RETURN;
    END IF;
    IF k.tpm IS NOT NULL AND t_window + v_tokens > k.tpm THEN
        RETURN QUERY SELECT 'rate_limited', CASE WHEN v_tokens > k.tpm THEN 60 ELSE v_wait END,
            format('this key may use %s tokens a minute; this request may use up to %s '
                   '(lower max_tokens to use less)', k.tpm, v_tokens);
        RETURN;
    END IF;
    IF k.budget_tokens IS NOT NULL
       AND s.spent_tokens + s.reserved_tokens + v_tokens > k.budget_tokens THEN
        RETURN QUERY SELECT 'budget_exceeded',
            CASE WHEN s.spent_tokens + v_tokens <= k.budget_tokens THEN 1
                 ELSE coalesce(ceil(extract(epoch FROM v_next - v_now))::integer, 86400) END,
            format('this key''s budget of %s tokens a %s is spent (used %s, in flight %s, '
                   'this request up to %s)', k.budget_tokens, k.period, s.spent_tokens,
                   s.reserved_tokens, v_tokens);
        RETURN;
    END IF;
    IF k.budget_usd IS NOT NULL AND s.spent_usd + s.reserved_usd + v_usd > k.budget_usd THEN
        RETURN QUERY SELECT 'budget_exceeded',
            CASE WHEN s.spent_usd + v_usd <= k.budget_usd THEN 1
                 ELSE coalesce(ceil(extract(epoch FROM v_next - v_now))::integer, 86400) END,
            format('this key''s budget of %s USD a %s is spent (used %s, in flight %s, '
                   'this request up to %s)', k.budget_usd, k.period, round(s.spent_usd, 6),
                   round(s.reserved_usd, 6), round(v_usd, 6));
        RETURN;
    END IF;

    -- Admitted: the reservation, its second of the window, and the key's counters, at once.
    WITH reserved AS (
        INSERT INTO reservations (turn_id, key_id, owner, model, created_at, prompt_bound,
            output_cap, input_price, output_price, tokens, usd)
        VALUES (p_turn, p_key, p_owner, p_model, v_now, p_prompt, p_output, p_in, p_out,
            v_tokens, v_usd)
    ), counted AS (
        INSERT INTO key_window AS w (key_id, second, requests, tokens)
        SELECT p_key, v_second, 1, v_tokens WHERE k.rpm IS NOT NULL OR k.tpm IS NOT NULL
        ON CONFLICT (key_id, second) DO UPDATE
        SET requests = w.requests + 1, tokens = w.tokens + EXCLUDED.tokens
    )
    UPDATE key_spend SET running = running + 1, reserved_usd = reserved_usd + v_usd,
        reserved_tokens = reserved_tokens + v_tokens
    WHERE key_id = p_key;
    RETURN QUERY SELECT NULL::text, NULL::integer, NULL::text;
END
$$;

-- The stream function's role settles and reserves; the history function's reads the rollup.
DO $$
BEGIN
    GRANT SELECT, INSERT, UPDATE, DELETE ON key_spend, key_window, reservations, usage_daily
        TO llm_stream_writer;
    GRANT SELECT ON key_spend, key_window, reservations, usage_daily TO llm_stream_reader;
EXCEPTION WHEN undefined_object THEN
    RAISE NOTICE 'roles not granted: migration V9 did not create them';
END
$$;
