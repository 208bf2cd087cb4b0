-- The planner settings every pooled connection sets (common/src/db.rs), for the whole database,
-- so that sessions this service does not open itself (the RDS Data API's) get them too:
-- custom plans (a cached generic plan of the search query scans every match) and no parallel
-- workers (short queries from many requests). Without the privilege (the migrating user does
-- not own the database) this is skipped with a notice; README, Design decisions, says what to
-- run instead.
DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET plan_cache_mode = force_custom_plan',
                   current_database());
    EXECUTE format('ALTER DATABASE %I SET max_parallel_workers_per_gather = 0',
                   current_database());
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'planner settings not applied: the migrating user does not own the database';
END
$$;
