-- migrate: concurrently
-- The second index 017 retired.
drop index concurrently if exists {schema}.{table}_retired_2_idx;
