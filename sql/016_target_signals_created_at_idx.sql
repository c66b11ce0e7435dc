-- migrate: optional, concurrently: reads of signals by time scan the table
create index concurrently if not exists eco_passive_signals_created_at_idx on analytics.eco_passive_signals (created_at);
