"""The engine's tests: a writer on the test's database, with the toy target's tables in place."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiopg
import pytest

from outbox.enqueue import OutboxWriter
from tests.outbox.toy import TOY_NAMES, create_toy_tables


@pytest.fixture
async def writer(db: aiopg.Pool) -> AsyncIterator[OutboxWriter]:
    await create_toy_tables(db)
    writer = OutboxWriter(db, TOY_NAMES)
    await writer.start()
    yield writer
    await writer.close()
