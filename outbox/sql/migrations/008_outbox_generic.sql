-- A table made by this version's predecessors (002 and 006 in their first form) knows its index on
-- (group, seq) by a name of a target, and checks the target's kinds: the index is renamed for the column
-- (005 renamed the column), and the check goes. On any other table this file changes nothing.
do $$
declare
  first_index name;
begin
  if to_regclass('{schema}.{table}_group_idx') is null then
    select c.relname into first_index from pg_index i join pg_class c on c.oid = i.indexrelid
    where i.indrelid = '{schema}.{table}'::regclass and i.indpred is null
      and pg_get_indexdef(i.indexrelid) ~ '\(group_key, seq\)$';
    if first_index is not null then
      execute format('alter index {schema}.%I rename to {table}_group_idx', first_index);
    end if;
  end if;
end
$$;

alter table {schema}.{table} drop constraint if exists {table}_kind_check;
