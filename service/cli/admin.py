"""The command line's database work: migrations and the outbox's dead letters."""

from __future__ import annotations

import json
import sys

from loguru import logger

from outbox import admin as outbox_admin
from service.config import Config
from service.store import migrations
from service.store.database import open_databases
from service.store.documents import dead_letter_document, stats_document


async def run_migrate(config: Config) -> int:
    databases = await open_databases(config)
    try:
        for role, applied in (await migrations.migrate_databases(databases)).items():
            logger.info("{} database: {}", role, ", ".join(applied) if applied else "up to date")
    finally:
        await databases.close()
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
    """`python -m service outbox stats|dead|requeue|purge-dead`: the admin endpoints' answers, as JSON."""
    databases = await open_databases(config)
    try:
        # As `serve` does: the outbox tables exist before anyone asks about them.
        await migrations.migrate_databases(databases)
        if action == "stats":
            document: object = stats_document(await outbox_admin.stats(databases.outbox))
        elif action == "dead":
            letters = await outbox_admin.list_dead(databases.outbox, limit=limit, after_seq=after_seq)
            document = [dead_letter_document(letter) for letter in letters]
        elif action == "purge-dead":
            document = {"purged": await outbox_admin.purge_dead(databases.outbox, older_than_s)}
        else:
            if bool(seqs) == all_:
                print("requeue: give SEQ numbers or --all", file=sys.stderr)
                return 2
            requeued = await outbox_admin.requeue(databases.outbox, None if all_ else seqs)
            document = {"requeued": requeued, "count": len(requeued)}
    finally:
        await databases.close()
    print(json.dumps(document, indent=2, default=str, ensure_ascii=False))
    return 0
