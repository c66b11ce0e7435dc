"""The baseline: a plain aiohttp handler that writes each signal with its own INSERT, then answers 202.

What a straightforward service does (and what the ECO backend does, minus the retries): one round trip and
one COMMIT per request, straight into analytics.eco_passive_signals. Run as
`python -m tests.bench.plain PORT DSN`; the parent must exist (the bench creates them first).
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import AsyncIterator

import aiopg
from aiohttp import web
from psycopg2.extras import Json

POOL = web.AppKey("pool", aiopg.Pool)
DSN = web.AppKey("dsn", str)
# The service's default pool size (ECO_DB_POOL_MAX), so both sides get the same number of connections.
POOL_MAX = 10

INSERT_SQL = """
INSERT INTO analytics.eco_passive_signals (id, interaction_id, signal, meta)
VALUES (%(id)s, %(interaction_id)s, %(signal)s, %(meta)s)
"""


async def post_signal(request: web.Request) -> web.Response:
    try:
        body = json.loads(await request.read())
        row = {
            "id": str(uuid.UUID(body.get("signal_id") or str(uuid.uuid4()))),
            "interaction_id": str(uuid.UUID(body["interaction_id"])),
            "signal": str(body["name"]),
            "meta": Json(body.get("meta") or {}),
        }
    except (ValueError, KeyError, TypeError, AttributeError):
        return web.json_response({"error": "validation_failed"}, status=422)
    async with request.app[POOL].acquire() as conn, conn.cursor() as cur:
        await cur.execute(INSERT_SQL, row)
    return web.json_response({"id": row["id"], "status": "queued"}, status=202)


async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
    app[POOL] = await aiopg.create_pool(app[DSN], minsize=POOL_MAX, maxsize=POOL_MAX, enable_hstore=False)
    yield
    app[POOL].close()
    await app[POOL].wait_closed()


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app(dsn: str) -> web.Application:
    app = web.Application()
    app[DSN] = dsn
    app.cleanup_ctx.append(pool_ctx)
    app.router.add_post("/api/signal", post_signal)
    app.router.add_get("/readyz", healthz)
    return app


def main(argv: list[str]) -> int:
    web.run_app(create_app(argv[2]), host="127.0.0.1", port=int(argv[1]), access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
