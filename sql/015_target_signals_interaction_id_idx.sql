-- migrate: optional, concurrently: reads of an interaction's signals scan the table
create index concurrently if not exists eco_passive_signals_interaction_id_idx
  on analytics.eco_passive_signals (interaction_id);
