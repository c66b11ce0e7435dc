-- Outbox database: every accepted event, committed before the client hears back.
create schema if not exists eco_outbox;

create table if not exists eco_outbox.events (
  seq bigint generated always as identity primary key,
  -- 'interaction' (created), 'interaction_completion', 'signal'
  kind text not null check (kind in ('interaction', 'interaction_completion', 'signal')),
  -- the id of the target row: the interaction's id, or the signal's id
  key uuid not null,
  -- the interaction a signal belongs to (and an interaction's own id), to release waiting signals at once
  interaction_id uuid not null,
  -- the target row, ready to insert
  payload jsonb not null,
  -- client_message_id of an interaction: a second ask with the same one is a 409
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

create unique index if not exists events_dedupe_key_key on eco_outbox.events (dedupe_key)
  where dedupe_key is not null;
-- The relay's claim: due pending rows, oldest due first.
create index if not exists events_due_idx on eco_outbox.events (next_attempt_at, seq) where state = 'pending';
-- Releasing the signals that wait on an interaction that was just delivered.
create index if not exists events_waiting_idx on eco_outbox.events (interaction_id)
  where state = 'pending' and kind = 'signal';
create index if not exists events_delivered_idx on eco_outbox.events (delivered_at) where state = 'delivered';
create index if not exists events_dead_idx on eco_outbox.events (dead_at, seq) where state = 'dead';
