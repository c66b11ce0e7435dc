"""The common signal, loaded by SignalSchema's own rules without running marshmallow: loading one through the
schema costs more than the rest of the request's own work, and intake runs at thousands of signals a second.

`signal_fast_path(schema)` reads the schema once: each field's data key, `required`, `allow_none`,
`load_default`, class and validators, and the schema's pre_load, @validates and post_load methods, which it
calls as they are. A field class or validator outside the two small tables below, a schema-level validator,
a field given outside the schema's COMMON_FIELDS, or a value the field would have to coerce makes it answer
None, and the caller loads the item with the schema, which also words the errors. So a field or rule added
to the schema can make the fast path fall back more often, never accept what the schema refuses.
tests/test_signal_fast_path.py holds the two to the same answers.
"""

from __future__ import annotations

import functools
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from marshmallow import ValidationError, fields, missing, validate
from marshmallow.decorators import POST_LOAD, PRE_LOAD, VALIDATES, VALIDATES_SCHEMA

from service.chat.schemas import FiniteFloat, SignalInput, SignalSchema, signal_schema
from service.config import Limits

# What a check answers when it is not sure the schema would load the value to the same thing.
UNSURE = object()

Check = Callable[[Any], Any]


def _uuid(value: Any) -> Any:
    if type(value) is not str:
        return UNSURE
    try:
        return uuid.UUID(value)
    except ValueError:
        return UNSURE


def _string(value: Any) -> Any:
    return value if type(value) is str else UNSURE


def _float_check(field: fields.Field) -> Check:
    allow_nan = field.allow_nan

    def check(value: Any) -> Any:
        if type(value) is not int and type(value) is not float:
            return UNSURE
        try:
            number = float(value)
        except OverflowError:
            return UNSURE
        return number if allow_nan or math.isfinite(number) else UNSURE

    return check


def _string_keyed_dict(value: Any) -> Any:
    if type(value) is not dict or any(type(key) is not str for key in value):
        return UNSURE
    return dict(value)


def _dict_check(field: fields.Field) -> Check | None:
    keys = field.key_field
    if field.value_field is not None or (keys is not None and _check(keys) is not _string):
        return None
    return _string_keyed_dict


# Field class (exactly, not a subclass, which may load differently) -> the check for a field of it, or None
# when the field is configured in a way the check does not cover.
FIELD_CHECKS: dict[type[fields.Field], Callable[[fields.Field], Check | None]] = {
    fields.UUID: lambda field: _uuid,
    fields.String: lambda field: _string,
    fields.Float: _float_check,
    FiniteFloat: _float_check,
    fields.Dict: _dict_check,
}


def _length(rule: validate.Length) -> Callable[[Any], bool]:
    if rule.equal is not None:
        return lambda value: len(value) == rule.equal
    low = 0 if rule.min is None else rule.min
    high = math.inf if rule.max is None else rule.max
    return lambda value: low <= len(value) <= high


def _one_of(rule: validate.OneOf) -> Callable[[Any], bool]:
    def accepts(value: Any) -> bool:
        try:
            return value in rule.choices
        except TypeError:
            return False

    return accepts


# Validator class (exactly) -> a predicate that holds where the validator passes.
VALIDATOR_CHECKS: dict[type, Callable[[Any], Callable[[Any], bool]]] = {
    validate.Length: _length,
    validate.Regexp: lambda rule: lambda value: rule.regex.match(value) is not None,
    validate.OneOf: _one_of,
}


def _check(field: fields.Field) -> Check | None:
    """The field's deserialization and validators as one plain check, or None if either is unknown."""
    make = FIELD_CHECKS.get(type(field))
    base = make(field) if make is not None else None
    predicates = []
    for rule in field.validators:
        make_predicate = VALIDATOR_CHECKS.get(type(rule))
        if make_predicate is None:
            return None
        predicates.append(make_predicate(rule))
    if base is None or not predicates:
        return base

    def check(value: Any) -> Any:
        loaded = base(value)
        if loaded is UNSURE:
            return UNSURE
        for holds in predicates:
            if not holds(loaded):
                return UNSURE
        return loaded

    return check


@dataclass(frozen=True, slots=True)
class _Field:
    attribute: str
    data_key: str
    required: bool
    allow_none: bool
    load_default: Any
    check: Check | None


class SignalFastPath:
    """SignalSchema.load for the common signal, derived from one schema instance; None means "ask it"."""

    def __init__(self, schema: SignalSchema) -> None:
        hooks = type(schema).resolve_hooks()
        self._usable = not (
            schema.many
            or schema.partial
            or hooks[VALIDATES_SCHEMA]
            or any(
                many or kwargs.get("pass_original")
                for tag in (PRE_LOAD, POST_LOAD)
                for _, many, kwargs in hooks[tag]
            )
        )
        self._pre_load = [getattr(schema, name) for name, _, _ in hooks[PRE_LOAD]]
        self._post_load = [getattr(schema, name) for name, _, _ in hooks[POST_LOAD]]
        specs = {
            name: _Field(
                attribute=field.attribute or name,
                data_key=field.data_key or name,
                required=field.required,
                allow_none=field.allow_none,
                load_default=field.load_default,
                check=_check(field),
            )
            for name, field in schema.load_fields.items()
        }
        # Fields the item may give; the schema's other fields send the item to the schema.
        self._given = {spec.data_key: spec for name, spec in specs.items() if name in schema.COMMON_FIELDS}
        # Fields that matter when absent: a required one is an error, a default one is loaded.
        self._absent = [
            (spec.data_key, spec.attribute, spec.required, spec.load_default, callable(spec.load_default))
            for spec in specs.values()
            if spec.required or spec.load_default is not missing
        ]
        # (attribute, data key, the schema's @validates method) for each field a method names.
        self._validators: list[tuple[str, str, Callable[..., Any]]] = []
        for name, _, kwargs in hooks[VALIDATES]:
            for field_name in kwargs["field_names"]:
                if field_name not in specs:
                    self._usable = False
                    continue
                spec = specs[field_name]
                self._validators.append((spec.attribute, spec.data_key, getattr(schema, name)))

    @property
    def fields(self) -> frozenset[str]:
        """The keys an item may give (after the schema's pre_load) and still take the fast path."""
        return frozenset(self._given)

    def __call__(self, item: Any) -> SignalInput | None:
        """The SignalInput the schema would load from `item`, or None to let the schema decide."""
        if not self._usable or type(item) is not dict:
            return None
        try:
            data = item
            for hook in self._pre_load:
                data = hook(data, many=False, partial=None, unknown=None)
            if type(data) is not dict:
                return None
            given = self._given
            result = {}
            for key, raw in data.items():
                spec = given.get(key)
                if spec is None:
                    return None
                if raw is None:
                    if not spec.allow_none:
                        return None
                    result[spec.attribute] = None
                    continue
                if spec.check is None or (value := spec.check(raw)) is UNSURE:
                    return None
                result[spec.attribute] = value
            for data_key, attribute, required, default, make_default in self._absent:
                if data_key not in data:
                    if required:
                        return None
                    result[attribute] = default() if make_default else default
            for attribute, data_key, validator in self._validators:
                if attribute in result:
                    validator(result[attribute], data_key=data_key)
            for hook in self._post_load:
                result = hook(result, many=False, partial=None, unknown=None)
        except ValidationError:
            return None
        return result if isinstance(result, SignalInput) else None


@functools.cache
def signal_fast_path(schema: SignalSchema) -> SignalFastPath:
    """One fast path per schema instance, built once, as the schema is (`signal_schema`)."""
    return SignalFastPath(schema)


def fast_signal(item: Any, limits: Limits) -> SignalInput | None:
    """The SignalInput `signal_schema(limits)` would load from `item`, or None to let the schema decide."""
    return signal_fast_path(signal_schema(limits))(item)
