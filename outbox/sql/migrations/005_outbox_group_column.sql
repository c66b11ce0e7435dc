-- The first 002 called the group column, the table's fourth, by a name of the target: it is renamed in place
-- before 006 builds its index on it (an upgrade from a table that old cannot be rolling: docs/deploys.md).
-- On any other table this file changes nothing.
do $$
declare
  first_name name;
begin
  if not exists (
    select 1 from pg_attribute
    where attrelid = '{schema}.{table}'::regclass and attname = 'group_key' and not attisdropped
  ) then
    select attname into strict first_name from pg_attribute
    where attrelid = '{schema}.{table}'::regclass and attnum = 4 and not attisdropped;
    execute format('alter table {schema}.{table} rename column %I to group_key', first_name);
  end if;
end
$$;
