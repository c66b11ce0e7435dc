-- Outbox database: the table belongs to the delivery engine, which knows no target. A row's group is the key
-- of the parent row it waits on (a parent's own key), whatever the target calls it; the kinds are the
-- target's to name, so the table no longer lists them.
do $$
begin
  if exists (
    select 1 from information_schema.columns
    where table_schema = 'eco_outbox' and table_name = 'events' and column_name = 'interaction_id'
  ) then
    alter table eco_outbox.events rename column interaction_id to group_key;
  end if;
end
$$;

alter table eco_outbox.events drop constraint if exists events_kind_check;

-- One group's rows, in order (the status read): named for the column it now reads.
alter index if exists eco_outbox.events_interaction_idx rename to events_group_idx;
