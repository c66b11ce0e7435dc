-- Contract: the partial indexes that the first form of 002 and 003 made on a kind of a target go. The engine
-- reads a group's rows through {table}_group_idx, whatever their kind. Their names spell that kind, which
-- the engine does not: they are found by their predicate, renamed {table}_retired_<n>_idx here (a rename
-- locks the index only, SHARE UPDATE EXCLUSIVE, and writers go on), and dropped concurrently by 018 and 019.
do $$
declare
  retired name;
  n int := 0;
begin
  for retired in
    select c.relname from pg_index i join pg_class c on c.oid = i.indexrelid
    where i.indrelid = '{schema}.{table}'::regclass and i.indpred is not null
      and pg_get_expr(i.indpred, i.indrelid) ~ '\mkind\M' and c.relname !~ '^{table}_retired_\d+_idx$'
    order by c.relname
  loop
    loop
      n := n + 1;
      exit when to_regclass('{schema}.{table}_retired_' || n || '_idx') is null;
    end loop;
    execute format('alter index {schema}.%I rename to %I', retired, '{table}_retired_' || n || '_idx');
  end loop;
end
$$;
