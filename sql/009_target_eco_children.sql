-- Target database: the ECO target's other child tables of an interaction, with the ECO columns exactly (its
-- SQL, ECO_CONTRACT.md), created when missing; a real ECO database keeps its own.
do $$
begin
  if to_regtype('analytics.eco_feedback_vote') is null then
    create type analytics.eco_feedback_vote as enum ('up', 'down');
  end if;
end
$$;

create table if not exists analytics.eco_feedback (
  id uuid primary key default gen_random_uuid(),
  interaction_id uuid references analytics.eco_interactions (id) on delete cascade,
  user_id uuid,
  session_id text,
  vote analytics.eco_feedback_vote not null,
  reason text[],
  source text,
  meta jsonb,
  created_at timestamptz not null default now()
);
-- Columns the ECO target added later: a table created from its first DDL gets them too.
alter table analytics.eco_feedback add column if not exists message_id text;
alter table analytics.eco_feedback add column if not exists arm text;
alter table analytics.eco_feedback add column if not exists pillar text default 'geral';
alter table analytics.eco_feedback add column if not exists prompt_hash text;
alter table analytics.eco_feedback add column if not exists "timestamp" timestamptz;

create table if not exists analytics.bandit_rewards (
  id uuid primary key default gen_random_uuid(),
  response_id text not null,
  interaction_id uuid references analytics.eco_interactions (id) on delete cascade,
  pilar text not null,
  arm text not null,
  recompensa numeric not null,
  created_at timestamptz not null default now()
);
create unique index if not exists bandit_rewards_response_arm_uidx on analytics.bandit_rewards (response_id, arm);

create table if not exists analytics.eco_module_usages (
  id uuid primary key default gen_random_uuid(),
  created_at timestamptz not null default now(),
  interaction_id uuid not null references analytics.eco_interactions (id) on delete cascade,
  module_key text not null,
  tokens int,
  position int
);

create table if not exists analytics.eco_bandit_arms (
  arm_key text primary key,
  pulls bigint not null default 0,
  alpha float8 not null default 1,
  beta float8 not null default 1,
  reward_sum float8 not null default 0,
  reward_sq_sum float8 not null default 0,
  last_update timestamptz not null default now()
);

-- The ECO target's function, for its other callers; the relay counts rewards itself, set-based and safe
-- under concurrency (this function's exists-then-insert is not). A real ECO database keeps its own.
do $$
begin
  if to_regprocedure('analytics.update_bandit_arm(text, numeric)') is null then
    create function analytics.update_bandit_arm(p_arm_key text, p_reward numeric) returns void
    language plpgsql as $fn$
    begin
      if not exists (select 1 from analytics.eco_bandit_arms where arm_key = p_arm_key) then
        insert into analytics.eco_bandit_arms (arm_key, pulls, alpha, beta) values (p_arm_key, 0, 1, 1);
      end if;
      update analytics.eco_bandit_arms
      set pulls = pulls + 1,
          alpha = alpha + case when p_reward >= 0.5 then 1 else 0 end,
          beta = beta + case when p_reward >= 0.5 then 0 else 1 end,
          reward_sum = reward_sum + p_reward,
          reward_sq_sum = reward_sq_sum + p_reward * p_reward,
          last_update = now()
      where arm_key = p_arm_key;
    end;
    $fn$;
  end if;
end
$$;

-- The reads of delivery: an interaction's feedback and module usages (the arm of its feedback).
create index if not exists eco_feedback_interaction_id_idx on analytics.eco_feedback (interaction_id);
create index if not exists eco_module_usages_interaction_id_idx
  on analytics.eco_module_usages (interaction_id, position);
