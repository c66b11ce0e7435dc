"""GET /: the demo page (plain HTML and JavaScript in service/http/static, no build step)."""

from __future__ import annotations

from pathlib import Path

from aiohttp import hdrs, web

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={hdrs.CACHE_CONTROL: "no-cache"})
