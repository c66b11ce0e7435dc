"""The HTTP ceiling: an aiohttp handler that parses and checks the signal as the one-INSERT baseline
(plain.py) does, then answers 202 without touching a database: no aiohttp handler that stores the signal can
be faster on this machine. Run as `python -m tests.bench.ceiling PORT`."""

from __future__ import annotations

import json
import sys
import uuid

from aiohttp import web


async def post_signal(request: web.Request) -> web.Response:
    try:
        body = json.loads(await request.read())
        row = {
            "id": str(uuid.UUID(body.get("signal_id") or str(uuid.uuid4()))),
            "interaction_id": str(uuid.UUID(body["interaction_id"])),
            "signal": str(body["name"]),
            "meta": body.get("meta") or {},
        }
    except (ValueError, KeyError, TypeError, AttributeError):
        return web.json_response({"error": "validation_failed"}, status=422)
    return web.json_response({"id": row["id"], "status": "queued"}, status=202)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/api/signal", post_signal)
    app.router.add_get("/readyz", healthz)
    return app


def main(argv: list[str]) -> int:
    web.run_app(create_app(), host="127.0.0.1", port=int(argv[1]), access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
