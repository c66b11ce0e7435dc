"""The command line's database work: migrations and the outbox's dead letters."""

from __future__ import annotations

import json
import sys

import psycopg2.errors
from loguru import logger

from outbox import admin as outbox_admin
from service.admin_documents import dead_letter_document, stats_document
from service.config import Config
from service.store import migrations
from service.store.database import open_databases, resolve_dsns
from service.store.outbox_names import OUTBOX_NAMES


async def run_migrate(config: Config) -> int:
    outbox_dsn, target_dsn = await resolve_dsns(config)
    outcomes = await migrations.migrate_dsns(outbox_dsn, target_dsn, config.migrations)
    migrations.log_outcomes(outcomes)
    if not any(outcome.applied or outcome.not_added for outcome in outcomes.values()):
        logger.info("migrations: up to date")
    return 0


async def run_outbox(
    config: Config,
    action: str,
    *,
    limit: int,
    after_seq: int,
    seqs: list[int],
    all_: bool,
    older_than_s: float,
) -> int:
    """`python -m service outbox stats|dead|requeue|purge-dead`: the admin endpoints' answers, as JSON.
    None of them runs DDL: on a database the service has not migrated yet, they say so in one line."""
    databases = await open_databases(config)
    try:
        if action == "stats":
            document: object = stats_document(await outbox_admin.stats(databases.outbox, OUTBOX_NAMES))
        elif action == "dead":
            letters = await outbox_admin.list_dead(
                databases.outbox, OUTBOX_NAMES, limit=limit, after_seq=after_seq
            )
            document = [dead_letter_document(letter) for letter in letters]
        elif action == "purge-dead":
            document = {"purged": await outbox_admin.purge_dead(databases.outbox, OUTBOX_NAMES, older_than_s)}
        else:
            if bool(seqs) == all_:
                print("requeue: give SEQ numbers or --all", file=sys.stderr)
                return 2
            requeued = await outbox_admin.requeue(databases.outbox, OUTBOX_NAMES, None if all_ else seqs)
            document = {"requeued": requeued, "count": len(requeued)}
    except psycopg2.errors.UndefinedTable:
        print(
            "the outbox has no tables yet: start the service, or run `python -m service migrate`",
            file=sys.stderr,
        )
        return 1
    finally:
        await databases.close()
    print(json.dumps(document, indent=2, default=str, ensure_ascii=False))
    return 0
