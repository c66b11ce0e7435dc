"""The signal fast path never disagrees with SignalSchema: whatever it accepts, the schema accepts and loads
to the same SignalInput (and anything else it leaves to the schema)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError, validate, validates_schema
from marshmallow import fields as mm_fields

from service.chat.schemas import SignalSchema
from service.config import Limits
from service.http.signal_fast_path import fast_signal, signal_fast_path

# Tight limits, so that generated values cross every bound.
LIMITS = Limits(signal_name_chars=8, signal_meta_bytes=64, signal_meta_depth=3)
SCHEMA = SignalSchema(LIMITS)

uuids = st.uuids().flatmap(
    lambda u: st.sampled_from([str(u), u.hex, str(u).upper(), f"{{{u}}}", f"urn:uuid:{u}"])
)
names = st.one_of(
    st.from_regex(r"^[A-Za-z0-9_.:\-]{1,10}$", fullmatch=True),
    st.text(max_size=12),
    st.sampled_from(["", "ok\n", "a b", "view"]),
)
json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)
)
json_values = st.recursive(
    json_leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=8,
)
anything = st.one_of(json_leaf, st.lists(json_leaf, max_size=2))
fields: dict[str, st.SearchStrategy[Any]] = {
    "interaction_id": st.one_of(uuids, st.text(max_size=8), anything),
    "name": st.one_of(names, anything),
    "signal": st.one_of(names, anything),
    "type": st.one_of(names, anything),
    "meta": st.one_of(st.dictionaries(st.text(max_size=6), json_values, max_size=4), anything),
    "value": st.one_of(
        st.integers(),
        st.just(10**400),
        st.floats(),
        st.booleans(),
        st.sampled_from(["1.5", "nan", "inf"]),
        st.none(),
    ),
    "ts": st.one_of(st.none(), st.sampled_from(["2026-01-01T00:00:00+00:00", "2026-01-01T00:00:00"])),
    "signal_id": st.one_of(uuids, st.none(), anything),
    "unknown": anything,
    "session_id": st.one_of(st.text(max_size=3), st.just("s" * 257), st.none(), anything),
    "message_id": st.one_of(st.just(f"eco-{uuid.uuid4()}"), st.just("m" * 257), st.none(), anything),
}


valid_names = st.from_regex(r"^[A-Za-z0-9_.:\-]{1,10}$", fullmatch=True)
# Mostly well-formed signals near the limits, so that the fast path is taken often and its bounds are crossed.
plausible: dict[str, st.SearchStrategy[Any]] = {
    "type": valid_names,
    "meta": st.dictionaries(st.text(max_size=6), json_values, max_size=4),
    "value": st.one_of(st.integers(), st.floats(allow_nan=False), st.none()),
    "signal_id": st.one_of(uuids, st.none()),
    "ts": st.none(),
    "session_id": st.one_of(st.text(max_size=8), st.just("s" * 256)),
    "message_id": st.one_of(st.text(max_size=8), st.just(f"eco-{uuid.uuid4()}")),
}


@st.composite
def items(draw: st.DrawFn) -> dict[str, Any]:
    item = {"interaction_id": draw(uuids), "name": draw(valid_names)}
    for name in draw(st.sets(st.sampled_from(sorted(plausible)))):
        item[name] = draw(plausible[name])
    for name in draw(st.sets(st.sampled_from(sorted(fields)), max_size=2)):
        item[name] = draw(fields[name])
    if draw(st.booleans()):
        item.pop(draw(st.sampled_from(sorted(item))))
    return item


@settings(max_examples=600, deadline=None)
@given(items())
def test_the_fast_path_agrees_with_the_schema(item: dict[str, Any]) -> None:
    fast = fast_signal(item, LIMITS)
    if fast is not None:
        assert SCHEMA.load(item) == fast


def test_the_common_signal_takes_the_fast_path() -> None:
    item = {
        "interaction_id": str(uuid.uuid4()),
        "name": "view",
        "signal_id": str(uuid.uuid4()),
        "meta": {"page": "/chat"},
        "value": 3,
    }
    fast = fast_signal(item, LIMITS)
    assert fast is not None
    assert fast == SCHEMA.load(item)
    assert fast.type == "passive" and fast.value == 3.0


def test_the_eco_app_lifecycle_signal_takes_the_fast_path() -> None:
    item = {"signal": "done", "interaction_id": str(uuid.uuid4()), "session_id": "s-1"}
    fast = fast_signal(item, LIMITS)
    assert fast is not None and fast.name == "done"
    assert fast == SCHEMA.load(item)


def test_what_the_schema_must_word_is_left_to_it() -> None:
    base = {"interaction_id": str(uuid.uuid4()), "name": "view"}
    for extra in (
        {"name": "x" * 9},
        {"meta": {"k": "v" * 80}},
        {"value": True},
        {"ts": "2026-01-01T00:00:00"},
        {"session_id": "s" * 257},
        {"response_id": "r-1"},
        {"interactionId": "not-a-uuid"},
        {"unknown": 1},
    ):
        assert fast_signal({**base, **extra}, LIMITS) is None


def test_the_fast_path_reads_only_fields_the_schema_declares() -> None:
    """`signal`, the alias, is read by the schema's own pre_load before the fast path looks at the keys."""
    fast = signal_fast_path(SCHEMA)
    assert fast.fields <= SCHEMA.declared_fields.keys()
    assert fast.fields == SCHEMA.COMMON_FIELDS


def test_the_eco_app_common_shapes_never_fall_back() -> None:
    for item in (
        {"signal": "done", "interaction_id": str(uuid.uuid4()), "session_id": "s-1"},
        {"name": "view", "interaction_id": str(uuid.uuid4()), "meta": {"page": "/chat"}, "value": 1.5},
        # The production app's copy: the reply's local id beside the real interaction id.
        {"signal": "copy", "interaction_id": str(uuid.uuid4()), "message_id": f"eco-{uuid.uuid4()}"},
    ):
        fast = signal_fast_path(SCHEMA)(item)
        assert fast is not None
        assert fast == SCHEMA.load(item)


def _no_digits(value: str) -> None:
    """A rule the fast path has no table entry for."""
    if any(char.isdigit() for char in value):
        raise ValidationError("no digits")


class WithTag(SignalSchema):
    COMMON_FIELDS = SignalSchema.COMMON_FIELDS | {"tag"}
    tag = mm_fields.String(validate=_no_digits)


def test_a_field_with_an_unknown_validator_makes_the_fast_path_fall_back() -> None:
    schema = WithTag(LIMITS)
    fast = signal_fast_path(schema)
    base = {"interaction_id": str(uuid.uuid4()), "name": "view"}
    assert schema.load({**base, "tag": "x"}) is not None  # the schema takes it (the tag is dropped) ...
    with pytest.raises(ValidationError):
        schema.load({**base, "tag": "x1"})  # ... and refuses this one: its rule is the schema's alone
    assert fast({**base, "tag": "x"}) is None
    assert fast({**base, "tag": "x1"}) is None
    assert fast(base) == schema.load(base)  # without the field, nothing unknown is in the way


class StricterName(SignalSchema):
    name = mm_fields.String(required=True, validate=[validate.Length(min=1), _no_digits])


class AnotherFieldClass(SignalSchema):
    COMMON_FIELDS = SignalSchema.COMMON_FIELDS | {"count"}
    count = mm_fields.Integer(validate=validate.Range(min=0))


class RequiredElsewhere(SignalSchema):
    origin = mm_fields.String(required=True)


class WithSchemaRule(SignalSchema):
    @validates_schema
    def _never(self, data: dict[str, Any], **kwargs: Any) -> None:
        raise ValidationError("refused")


def test_rules_the_fast_path_does_not_know_send_every_such_item_to_the_schema() -> None:
    base = {"interaction_id": str(uuid.uuid4()), "name": "view7"}
    assert signal_fast_path(StricterName(LIMITS))(base) is None
    assert signal_fast_path(AnotherFieldClass(LIMITS))({**base, "count": 3}) is None
    assert signal_fast_path(RequiredElsewhere(LIMITS))(base) is None
    assert signal_fast_path(RequiredElsewhere(LIMITS))({**base, "origin": "web"}) is None
    assert signal_fast_path(WithSchemaRule(LIMITS))(base) is None
    assert signal_fast_path(SCHEMA)(base) is not None
