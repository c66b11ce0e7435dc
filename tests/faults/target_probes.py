"""Triggers the fault tests put on a target database, to see what the relay really does there.

The delivery log records every signal row the relay sends to INSERT — a BEFORE trigger fires even for a row
that ON CONFLICT then drops — in the relay's own transaction, so a rolled-back delivery leaves no entry and a
row written twice (two relays on one row, or a re-delivery after a crash) leaves two. The brake slows each
insert statement, so a backlog takes long enough to be interrupted half-way.
"""

from __future__ import annotations

import aiopg

from tests.helpers import fetch

INSTALL_DELIVERY_LOG_SQL = """
CREATE TABLE public.delivery_log (id uuid NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION public.log_delivery() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.delivery_log (id) VALUES (NEW.id);
    RETURN NEW;
END $$;
CREATE TRIGGER log_delivery BEFORE INSERT ON analytics.eco_passive_signals
    FOR EACH ROW EXECUTE FUNCTION public.log_delivery();
"""

INSTALL_BRAKE_SQL = """
CREATE FUNCTION public.brake() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(%(seconds)s);
    RETURN NULL;
END $$;
CREATE TRIGGER brake BEFORE INSERT ON analytics.eco_passive_signals
    FOR EACH STATEMENT EXECUTE FUNCTION public.brake();
"""


async def install_delivery_log(target: aiopg.Pool) -> None:
    await fetch(target, INSTALL_DELIVERY_LOG_SQL)


async def install_brake(target: aiopg.Pool, seconds: float) -> None:
    await fetch(target, INSTALL_BRAKE_SQL.replace("%(seconds)s", repr(float(seconds))))


async def deliveries(target: aiopg.Pool) -> dict[str, int]:
    """How many times each signal id was written to the target."""
    rows = await fetch(target, "SELECT id::text, count(*) FROM public.delivery_log GROUP BY id")
    return {key: count for key, count in rows}
