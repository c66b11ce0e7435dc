-- migrate: concurrently
-- The first index 017 retired (none on a table made by this engine's files).
drop index concurrently if exists {schema}.{table}_retired_1_idx;
