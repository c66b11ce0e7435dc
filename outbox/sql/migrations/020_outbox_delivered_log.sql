-- Outbox database: a delivered row leaves {schema}.{table} in the statement that marks it, and this log keeps
-- what the intake's dedupe, the relay's parent checks, the status read and the retention still need of it.
-- Expand only: the previous release still marks rows delivered in {schema}.{table}, and every reader reads
-- both until no running release does.
create table if not exists {schema}.{table}_delivered (
  -- the row's identity in {schema}.{table}: a key delivered once is not taken in again
  key uuid not null,
  kind text not null,
  group_key uuid not null,
  -- the row's seq in {schema}.{table}: the status read's order
  seq bigint not null,
  dedupe_key text,
  attempts int not null,
  created_at timestamptz not null,
  delivered_at timestamptz not null,
  -- what the status read shows of the payload (the target names the fields), or an alias row's whole payload
  summary jsonb,
  primary key (key, kind)
);

-- Intake's dedupe by dedupe key (not unique here: the outbox table's own index refuses the repeats).
create index if not exists {table}_delivered_dedupe_key_idx on {schema}.{table}_delivered (dedupe_key)
  where dedupe_key is not null;
-- One group's rows, in order: the status read.
create index if not exists {table}_delivered_group_idx on {schema}.{table}_delivered (group_key, seq);
-- Retention: oldest first.
create index if not exists {table}_delivered_at_idx on {schema}.{table}_delivered (delivered_at);
