-- migrate: optional, concurrently: a repeated message_id is stored as a second interaction (ECO's own DDL has no such index, and its data may repeat one)
create unique index concurrently if not exists eco_interactions_message_id_key
  on analytics.eco_interactions (message_id) where message_id is not null;
