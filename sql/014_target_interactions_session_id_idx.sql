-- migrate: optional, concurrently: reads of a session's interactions scan the table
create index concurrently if not exists eco_interactions_session_id_idx on analytics.eco_interactions (session_id);
