"""GET /api/openapi.json: the OpenAPI document of this app's routes, sized by this server's limits."""

from __future__ import annotations

from aiohttp import web

from service.http.openapi import openapi_document
from service.keys import CONFIG


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(request.app.router, request.app[CONFIG].limits))
