-- Target database: the ECO backend's analytics tables, as its DDL has them, plus what its code needed.
create schema if not exists analytics;

create table if not exists analytics.eco_interactions (
  id uuid primary key default gen_random_uuid(),
  user_id uuid,
  session_id text,
  message_id text,
  prompt_hash text,
  module_combo text[],
  tokens_in int,
  tokens_out int,
  latency_ms int,
  created_at timestamptz not null default now()
);

create table if not exists analytics.eco_passive_signals (
  id uuid primary key default gen_random_uuid(),
  created_at timestamptz not null default now(),
  interaction_id uuid not null references analytics.eco_interactions (id) on delete cascade,
  signal text not null,
  meta jsonb not null default '{}'::jsonb
);

-- The ECO code writes meta on interactions and looks them up by message id; its DDL lacked both.
alter table analytics.eco_interactions add column if not exists meta jsonb not null default '{}'::jsonb;
-- Its indexes are built concurrently, one file each (012-016): the table may be ECO's, large and written to.
