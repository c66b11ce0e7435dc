-- migrate: optional, concurrently: reads of interactions by time scan the table
create index concurrently if not exists eco_interactions_created_at_idx on analytics.eco_interactions (created_at);
