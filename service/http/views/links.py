"""Enqueueing rows with the links they carry: a request that gives the ECO app's local reply id beside a real
interaction id ties the two, and the rows filed under the local id move to the interaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import psycopg2
from aiohttp import web
from loguru import logger

from outbox.aliases import regroup
from outbox.errors import CONNECTION_ERRORS, describe
from outbox.events import EnqueueResult, OutboxEvent
from service.keys import DATABASES, WRITER
from service.store.outbox_names import OUTBOX_NAMES
from service.target.rows import Kind, message_link_event


async def enqueue_linked(
    request: web.Request,
    events: Sequence[OutboxEvent],
    links: Sequence[tuple[str, uuid.UUID] | None],
) -> list[EnqueueResult]:
    """Commit `events` and their links in one statement; then move the rows filed under each new link's
    local id. A failure of that move loses nothing: the relay moves them when it next holds them."""
    link_events = list(
        {event.key: event for event in (message_link_event(*link) for link in links if link)}.values()
    )
    results = await request.app[WRITER].enqueue([*events, *link_events])
    created = [str(result.event.key) for result in results[len(events) :] if result.inserted]
    if created:
        try:
            await regroup(request.app[DATABASES].outbox, OUTBOX_NAMES, Kind.MESSAGE_LINK, created)
        except (*CONNECTION_ERRORS, psycopg2.Error) as exc:
            logger.bind(code="regroup_deferred").warning(
                "rows filed under {} local ids are left to the relay: {}", len(created), describe(exc)
            )
    return results[: len(events)]
