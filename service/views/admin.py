"""Admin endpoints for the outbox: stats, dead letters, requeue; bearer ECO_ADMIN_TOKEN, off when unset."""

from __future__ import annotations

import hmac
from dataclasses import asdict
from typing import Any

from aiohttp import web
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from outbox import inspect
from service.errors import ApiError
from service.keys import CONFIG, DATABASES
from service.payload import read_json

ADMIN_BODY_BYTES = 64 * 1024


def require_admin(request: web.Request) -> None:
    token = request.app[CONFIG].admin_token
    if token is None:
        raise ApiError(403, "admin_disabled", "admin endpoints are off: ECO_ADMIN_TOKEN is not set")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise ApiError(
            401,
            "unauthorized",
            "a bearer token is required",
            headers={"WWW-Authenticate": 'Bearer realm="admin"'},
        )
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(403, "forbidden", "the bearer token is not valid")


def stats_document(rows: list[inspect.KindStats]) -> dict[str, Any]:
    document: dict[str, Any] = {"pending": {}, "dead": {}}
    for row in rows:
        document[row.state][row.kind] = {"rows": row.rows, "oldest_age_s": round(row.oldest_age_s, 3)}
    document["pending_total"] = sum(entry["rows"] for entry in document["pending"].values())
    document["dead_total"] = sum(entry["rows"] for entry in document["dead"].values())
    return document


def dead_letter_document(letter: inspect.DeadLetter) -> dict[str, Any]:
    document = asdict(letter)
    document["created_at"] = letter.created_at.isoformat()
    document["dead_at"] = letter.dead_at.isoformat() if letter.dead_at else None
    return document


class DeadQuerySchema(Schema):
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    after_seq = fields.Integer(load_default=0, validate=validate.Range(min=0))


class RequeueSchema(Schema):
    seqs = fields.List(
        fields.Integer(validate=validate.Range(min=1)), validate=validate.Length(min=1, max=10_000)
    )
    all = fields.Boolean(load_default=False)

    @validates_schema
    def _one_of(self, data: dict[str, Any], **kwargs: Any) -> None:
        if bool(data.get("seqs")) == bool(data.get("all")):
            raise ValidationError(
                "give either `seqs` (a list of outbox seq numbers) or `all: true`", "_schema"
            )


class PurgeDeadSchema(Schema):
    older_than_s = fields.Float(required=True, validate=validate.Range(min=0))


async def outbox_stats(request: web.Request) -> web.Response:
    require_admin(request)
    return web.json_response(stats_document(await inspect.stats(request.app[DATABASES].outbox)))


async def outbox_dead(request: web.Request) -> web.Response:
    require_admin(request)
    query = DeadQuerySchema().load(dict(request.query))
    letters = await inspect.list_dead(request.app[DATABASES].outbox, **query)
    return web.json_response(
        {
            "items": [dead_letter_document(letter) for letter in letters],
            "next_after_seq": letters[-1].seq if len(letters) == query["limit"] else None,
        }
    )


async def outbox_requeue(request: web.Request) -> web.Response:
    require_admin(request)
    body = RequeueSchema().load(await read_json(request, ADMIN_BODY_BYTES))
    requeued = await inspect.requeue(request.app[DATABASES].outbox, None if body["all"] else body["seqs"])
    return web.json_response({"requeued": requeued, "count": len(requeued)})


async def outbox_purge_dead(request: web.Request) -> web.Response:
    require_admin(request)
    body = PurgeDeadSchema().load(await read_json(request, ADMIN_BODY_BYTES))
    purged = await inspect.purge_dead(request.app[DATABASES].outbox, body["older_than_s"])
    return web.json_response({"purged": purged})
