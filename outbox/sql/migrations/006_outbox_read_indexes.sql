-- migrate: concurrently
-- One group's rows, in order: the status read, and the relay's release of a group's children. A database
-- that applied this version in its first form has the index under an earlier name, which 008 corrects.
create index concurrently if not exists {table}_group_idx on {schema}.{table} (group_key, seq);
