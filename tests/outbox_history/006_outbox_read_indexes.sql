-- migrate: concurrently
-- Reads that must not grow with the rows kept for retention.
-- The status endpoint (GET /api/interactions/{id}/signals): one interaction's rows, in order.
create index concurrently if not exists events_interaction_idx on eco_outbox.events (interaction_id, seq);
