-- The outbox as the engine wants it, under the names it is given (outbox.names): what its migrations
-- (outbox/sql/migrations/) make, from an empty database or from one its earlier releases made, which
-- tests/test_outbox_schema.py holds equal to this file.
create schema if not exists {schema};

create table if not exists {schema}.{table} (
  seq bigint generated always as identity primary key,
  -- the target's kind of the row; the engine names none
  kind text not null,
  -- the id of the target row
  key uuid not null,
  -- the key of the parent row a child waits on (a parent's own key)
  group_key uuid not null,
  -- the target row, ready to write
  payload jsonb not null,
  -- a second row with the same dedupe key is not inserted
  dedupe_key text,
  state text not null default 'pending' check (state in ('pending', 'delivered', 'dead')),
  attempts int not null default 0,
  next_attempt_at timestamptz not null default now(),
  created_at timestamptz not null default now(),
  delivered_at timestamptz,
  dead_at timestamptz,
  last_error text,
  unique (kind, key)
);

create unique index if not exists {table}_dedupe_key_key on {schema}.{table} (dedupe_key)
  where dedupe_key is not null;
-- The relay's claim: due pending rows, oldest due first.
create index if not exists {table}_due_idx on {schema}.{table} (next_attempt_at, seq) where state = 'pending';
-- Retention: delivered rows, and dead rows, oldest first.
create index if not exists {table}_delivered_idx on {schema}.{table} (delivered_at) where state = 'delivered';
create index if not exists {table}_dead_idx on {schema}.{table} (dead_at, seq) where state = 'dead';
-- One group's rows, in order: the status read, and the relay's release of a group's children.
create index if not exists {table}_group_idx on {schema}.{table} (group_key, seq);

-- Delivered rows, moved out of the table above in the statement that marks them: what the intake's dedupe,
-- the relay's parent checks, the status read and the retention need of them (docs/design.md).
create table if not exists {schema}.{table}_delivered (
  -- the row's identity in the table above: a key delivered once is not taken in again
  key uuid not null,
  kind text not null,
  group_key uuid not null,
  -- the row's seq in the table above: the status read's order
  seq bigint not null,
  dedupe_key text,
  attempts int not null,
  created_at timestamptz not null,
  delivered_at timestamptz not null,
  -- what the status read shows of the payload (the target names the fields), or an alias row's whole payload
  summary jsonb,
  primary key (key, kind)
);

-- Intake's dedupe by dedupe key (not unique here: the table above refuses the repeats).
create index if not exists {table}_delivered_dedupe_key_idx on {schema}.{table}_delivered (dedupe_key)
  where dedupe_key is not null;
-- One group's rows, in order: the status read.
create index if not exists {table}_delivered_group_idx on {schema}.{table}_delivered (group_key, seq);
-- Retention: oldest first.
create index if not exists {table}_delivered_at_idx on {schema}.{table}_delivered (delivered_at);
