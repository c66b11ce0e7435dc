-- The outbox: every accepted event, committed before the client hears back. Rewritten for the engine under
-- the names it is given, as the table stands after 008: a database that applied this version in its first
-- form gets the rest from 008 and 017-019 (docs/deploys.md).
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
