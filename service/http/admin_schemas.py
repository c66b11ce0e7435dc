"""The admin endpoints' request shapes: loaded by their handlers and described by the OpenAPI document."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema


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
