-- The migration runner's statements (outbox.migrations), one named section each. {ledger_schema} and
-- {ledger_table} are the ledger its user names (outbox.migrations.Ledger); the lock is a parameter.

-- name: set_lock_timeout
-- Every statement of the session gives up a lock wait after this: DDL waiting for a lock queues every later
-- statement on the table behind it.
SELECT set_config('lock_timeout', %(lock_timeout_ms)s || 'ms', false);

-- name: try_lock
-- Held by the migrator's session, not a transaction: `concurrently` files run outside one. Polled, so that
-- no statement stays open waiting for it.
SELECT pg_try_advisory_lock(hashtext(%(lock)s));

-- name: unlock
SELECT pg_advisory_unlock(hashtext(%(lock)s));

-- name: create_ledger
-- Its schema too, only when missing: a role may lack the right to create one, even one that exists.
DO $$
BEGIN
    IF to_regnamespace('{ledger_schema}') IS NULL THEN
        CREATE SCHEMA {ledger_schema};
    END IF;
    CREATE TABLE IF NOT EXISTS {ledger_schema}.{ledger_table} (
        version text PRIMARY KEY,
        applied_at timestamptz NOT NULL DEFAULT now()
    );
END
$$;

-- name: ledger_exists
SELECT to_regclass('{ledger_schema}.{ledger_table}') IS NOT NULL;

-- name: applied
SELECT version FROM {ledger_schema}.{ledger_table};

-- name: record
INSERT INTO {ledger_schema}.{ledger_table} (version) VALUES (%(version)s) ON CONFLICT DO NOTHING;

-- name: invalid_index
-- What a failed concurrent build leaves behind: `if not exists` would take it for done.
SELECT 1 FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = %(name)s AND NOT i.indisvalid;
