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
create unique index if not exists eco_interactions_message_id_key
  on analytics.eco_interactions (message_id) where message_id is not null;
create index if not exists eco_interactions_created_at_idx on analytics.eco_interactions (created_at);
create index if not exists eco_interactions_session_id_idx on analytics.eco_interactions (session_id);
create index if not exists eco_passive_signals_interaction_id_idx
  on analytics.eco_passive_signals (interaction_id);
create index if not exists eco_passive_signals_created_at_idx on analytics.eco_passive_signals (created_at);
