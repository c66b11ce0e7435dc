-- Outbox database: a delivered row leaves eco_outbox.events in the statement that marks it, and this log keeps
-- what the intake's dedupe, the relay's parent checks, the status read and the retention still need of it.
-- Expand only: the previous release still marks rows delivered in eco_outbox.events, and every reader reads
-- both until no running release does.
create table if not exists eco_outbox.events_delivered (
  -- the row's identity in eco_outbox.events: a key delivered once is not taken in again
  key uuid not null,
  kind text not null,
  group_key uuid not null,
  -- the row's seq in eco_outbox.events: the status read's order
  seq bigint not null,
  dedupe_key text,
  attempts int not null,
  created_at timestamptz not null,
  delivered_at timestamptz not null,
  -- what the status read shows of the payload (the target names the fields), or an alias row's whole payload
  summary jsonb,
  primary key (key, kind)
);

-- Intake's dedupe by dedupe key (not unique here: eco_outbox.events' own index refuses the repeats).
create index if not exists events_delivered_dedupe_key_idx on eco_outbox.events_delivered (dedupe_key)
  where dedupe_key is not null;
-- One group's rows, in order: the status read.
create index if not exists events_delivered_group_idx on eco_outbox.events_delivered (group_key, seq);
-- Retention: oldest first.
create index if not exists events_delivered_at_idx on eco_outbox.events_delivered (delivered_at);
