-- migrate: concurrently
-- Reviving the signals that died waiting for an interaction once it is delivered (the relay's release).
create index concurrently if not exists events_dead_signals_idx on eco_outbox.events (interaction_id)
  where state = 'dead' and kind = 'signal';
