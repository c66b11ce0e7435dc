"""POST /api/signal: 202 once the outbox row is committed, whether or not the interaction exists yet; the id
answered is the target row's id; idempotency, aliases, batches, beacons and meta enrichment; and every kind
of bad input to the API answered with the SPEC's 4xx JSON, never a 500, never a traceback."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from tests.helpers import OUTBOX_ROWS, fetch, insert_interaction, scalar, wait_for

SIGNAL_MAX_BYTES = 32 * 1024
ASK_MAX_BYTES = 1024 * 1024
IID = "6d1f0c3e-2b7a-4f65-9a53-0c8f2d7b9e41"


async def stored(db: Any, signal_id: str) -> list[tuple[Any, ...]]:
    return await fetch(
        db,
        "select interaction_id::text, signal, meta from analytics.eco_passive_signals where id = %s",
        (signal_id,),
    )


async def delivered(db: Any, signal_id: str) -> tuple[Any, ...]:
    """The target row of one signal, once the relay has written it."""
    rows = await wait_for(lambda: stored(db, signal_id))
    assert len(rows) == 1
    return rows[0]


async def queued(resp: ClientResponse) -> str:
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["status"] == "queued" and set(body) == {"id", "status"}
    return body["id"]


async def test_202_before_the_interaction_exists_and_id_is_the_row_id(client: TestClient, db: Any) -> None:
    iid = str(uuid.uuid4())
    signal_id = await queued(await client.post("/api/signal", json={"interaction_id": iid, "name": "view"}))
    uuid.UUID(signal_id)
    outbox = await fetch(
        db, f"select kind, group_key::text, state from {OUTBOX_ROWS} where key = %s", (signal_id,)
    )
    assert outbox == [("signal", iid, "pending")]
    assert await stored(db, signal_id) == []
    await insert_interaction(db, iid)
    interaction_id, name, _ = await delivered(db, signal_id)
    assert (interaction_id, name) == (iid, "view")


async def test_client_signal_id_and_duplicates_store_once(client: TestClient, db: Any) -> None:
    await insert_interaction(db, IID)
    signal_id = str(uuid.uuid4())
    body = {"interaction_id": IID, "name": "click", "signal_id": signal_id}
    first = await queued(await client.post("/api/signal", json=body))
    second = await queued(await client.post("/api/signal", json=body))
    assert first == second == signal_id
    await delivered(db, signal_id)
    assert await scalar(db, f"select count(*) from {OUTBOX_ROWS} where key = %s", (signal_id,)) == 1
    assert await scalar(db, "select count(*) from analytics.eco_passive_signals") == 1


async def test_idempotency_key_header(client: TestClient, db: Any) -> None:
    await insert_interaction(db, IID)
    key = str(uuid.uuid4())
    answers = [
        await queued(
            await client.post(
                "/api/signal",
                json={"interaction_id": IID, "name": "scroll"},
                headers={"Idempotency-Key": key},
            )
        )
        for _ in range(2)
    ]
    assert answers == [key, key]
    await delivered(db, key)
    assert await scalar(db, "select count(*) from analytics.eco_passive_signals") == 1


async def test_header_interaction_id_wins_over_body(client: TestClient, db: Any) -> None:
    header_iid, body_iid = str(uuid.uuid4()), str(uuid.uuid4())
    await insert_interaction(db, header_iid)
    signal_id = await queued(
        await client.post(
            "/api/signal",
            json={"interaction_id": body_iid, "name": "view"},
            headers={"X-Eco-Interaction-Id": header_iid},
        )
    )
    assert (await delivered(db, signal_id))[0] == header_iid
    only_header = await queued(
        await client.post("/api/signal", json={"name": "view"}, headers={"X-Eco-Interaction-Id": header_iid})
    )
    assert (await delivered(db, only_header))[0] == header_iid


async def test_signal_alias(client: TestClient, db: Any) -> None:
    await insert_interaction(db, IID)
    signal_id = await queued(await client.post("/api/signal", json={"interaction_id": IID, "signal": "copy"}))
    assert (await delivered(db, signal_id))[1] == "copy"
    same = {"interaction_id": IID, "signal": "copy", "name": "copy"}
    await queued(await client.post("/api/signal", json=same))


async def test_batch_answers_a_list(client: TestClient, db: Any) -> None:
    await insert_interaction(db, IID)
    own_id = str(uuid.uuid4())
    batch = [
        {"interaction_id": IID, "name": "a"},
        {"interaction_id": IID, "signal": "b", "signal_id": own_id},
        {"interaction_id": IID, "name": "c", "meta": {"k": [1, 2]}},
    ]
    resp = await client.post("/api/signal", json=batch)
    assert resp.status == 202
    answers = await resp.json()
    assert [answer["status"] for answer in answers] == ["queued"] * 3
    assert answers[1]["id"] == own_id
    names = [(await delivered(db, answer["id"]))[1] for answer in answers]
    assert names == ["a", "b", "c"]


async def test_beacon_text_plain_body(client: TestClient, db: Any) -> None:
    await insert_interaction(db, IID)
    resp = await client.post(
        "/api/signal",
        data=json.dumps({"interaction_id": IID, "name": "unload"}),
        headers={"Content-Type": "text/plain;charset=UTF-8"},
    )
    assert (await delivered(db, await queued(resp)))[1] == "unload"


async def test_meta_enrichment(client: TestClient, db: Any) -> None:
    await insert_interaction(db, IID)
    body = {
        "interaction_id": IID,
        "name": "rating",
        "type": "explicit",
        "ts": "2026-01-02T03:04:05.678000+00:00",
        "value": 4.5,
        "meta": {"screen": "chat", "nested": {"a": [1, "b"]}},
    }
    headers = {"X-Eco-Guest-Id": "guest_1", "X-Eco-Session-Id": "sess_1"}
    signal_id = await queued(await client.post("/api/signal", json=body, headers=headers))
    _, _, meta = await delivered(db, signal_id)
    assert meta == {
        "screen": "chat",
        "nested": {"a": [1, "b"]},
        "type": "explicit",
        "ts": "2026-01-02T03:04:05.678000+00:00",
        "value": 4.5,
        "guest_id_header": "guest_1",
        "session_id_header": "sess_1",
    }
    bare = await queued(await client.post("/api/signal", json={"interaction_id": IID, "name": "view"}))
    assert (await delivered(db, bare))[2] == {"type": "passive"}


# Bad input --------------------------------------------------------------------------------------------------

GOOD = {"interaction_id": IID, "name": "view"}


def raw(document: str) -> dict[str, Any]:
    return {"data": document.encode("utf-8"), "headers": {"Content-Type": "application/json"}}


def raw_stream(document: str) -> dict[str, Any]:
    """A large body as a file object (aiohttp warns that big raw bytes could block the loop)."""
    return {"data": io.BytesIO(document.encode("utf-8")), "headers": {"Content-Type": "application/json"}}


def body(**fields: Any) -> dict[str, Any]:
    return {"json": {**GOOD, **fields}}


def nested(depth: int) -> dict[str, Any]:
    meta: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        meta = {"a": meta}
    return meta


def deep_document(depth: int) -> str:
    opening, closing = '{"a":' * depth, "}" * depth
    return f'{{"interaction_id": "{IID}", "name": "x", "meta": {opening}1{closing}}}'


async def chunked(payload: bytes) -> AsyncIterator[bytes]:
    """A body with no Content-Length, so only the size check while reading can stop it."""
    for start in range(0, len(payload), 8192):
        yield payload[start : start + 8192]


# (id, request kwargs, status, the `details` keys a 422 must name)
SIGNAL_CASES: list[tuple[str, dict[str, Any], int, set[str]]] = [
    ("truncated-json", raw('{"interaction_id": '), 400, set()),
    ("empty-body", raw(""), 400, set()),
    ("not-utf8", {"data": b'{"name": "\xff"}', "headers": {"Content-Type": "application/json"}}, 400, set()),
    ("nan", raw(f'{{"interaction_id": "{IID}", "name": "x", "value": NaN}}'), 400, set()),
    ("infinity", raw(f'{{"interaction_id": "{IID}", "name": "x", "value": Infinity}}'), 400, set()),
    ("minus-infinity", raw(f'{{"interaction_id": "{IID}", "name": "x", "value": -Infinity}}'), 400, set()),
    ("float-overflow", raw(f'{{"interaction_id": "{IID}", "name": "x", "value": 1e999}}'), 400, set()),
    (
        "int-overflow",
        raw(f'{{"interaction_id": "{IID}", "name": "x", "value": 1{"0" * 400}}}'),
        422,
        {"value"},
    ),
    (
        "wrong-types",
        {
            "json": {
                "interaction_id": 123,
                "name": 5,
                "type": 3,
                "meta": [1],
                "value": "high",
                "ts": 7,
                "signal_id": "nope",
            }
        },
        422,
        {"interaction_id", "name", "type", "meta", "value", "ts", "signal_id"},
    ),
    ("bool-value", body(value=True), 422, {"value"}),
    ("bad-uuid", body(interaction_id="abc"), 422, {"interaction_id"}),
    ("naive-ts", body(ts="2026-01-01T00:00:00"), 422, {"ts"}),
    ("garbage-ts", body(ts="yesterday"), 422, {"ts"}),
    ("missing-all", {"json": {}}, 422, {"interaction_id", "name"}),
    ("missing-name", {"json": {"interaction_id": IID}}, 422, {"name"}),
    ("null-name", body(name=None), 422, {"name"}),
    ("known-extra-wrong-type", body(session_id=5), 422, {"session_id"}),
    ("alias-wrong-type", body(interactionId="abc"), 422, {"interactionId"}),
    ("empty-name", body(name=""), 422, {"name"}),
    ("name-charset", body(name="a b<script>"), 422, {"name"}),
    ("name-too-long", body(name="n" * 65), 422, {"name"}),
    ("meta-too-deep", body(meta=nested(9)), 422, {"meta"}),
    ("meta-too-large", body(meta={"blob": "x" * 9000}), 422, {"meta"}),
    ("meta-deeper-than-parser", raw(deep_document(3000)), 422, {"_schema"}),
    ("nul-in-name", body(name="a\x00b"), 422, {"name"}),
    ("nul-in-type", body(type="a\x00"), 422, {"type"}),
    ("nul-in-meta-value", body(meta={"k": "v\x00"}), 422, {"meta"}),
    ("nul-in-nested-meta-value", body(meta={"k": [{"j": "\x00"}]}), 422, {"meta"}),
    ("nul-in-meta-key", body(meta={"k\x00": "v"}), 422, {"meta"}),
    ("nul-in-field-name", {"json": {**GOOD, "x\x00": 1}}, 422, {"_schema"}),
    ("escaped-nul", raw(f'{{"interaction_id": "{IID}", "name": "a\\u0000"}}'), 422, {"name"}),
    ("lone-surrogate-name", raw(f'{{"interaction_id": "{IID}", "name": "a\\ud800"}}'), 422, {"name"}),
    (
        "lone-surrogate-meta-key",
        raw(f'{{"interaction_id": "{IID}", "name": "a", "meta": {{"\\udfff": 1}}}}'),
        422,
        {"meta"},
    ),
    (
        "lone-surrogate-meta-value",
        raw(f'{{"interaction_id": "{IID}", "name": "a", "meta": {{"k": ["\\ud83d"]}}}}'),
        422,
        {"meta"},
    ),
    ("scalar-body", {"json": 42}, 422, {"_schema"}),
    ("null-body", raw("null"), 422, {"_schema"}),
    ("empty-batch", {"json": []}, 422, {"_schema"}),
    ("batch-with-bad-item", {"json": [GOOD, {"interaction_id": IID}]}, 422, {"1"}),
    ("batch-with-scalar", {"json": [GOOD, 1]}, 422, {"1"}),
    ("batch-too-large", {"json": [GOOD] * 101}, 422, {"_schema"}),
    (
        "batch-with-idempotency-key",
        {"json": [GOOD], "headers": {"Idempotency-Key": str(uuid.uuid4())}},
        422,
        {"Idempotency-Key"},
    ),
    (
        "bad-header-interaction-id",
        {"json": GOOD, "headers": {"X-Eco-Interaction-Id": "x"}},
        422,
        {"X-Eco-Interaction-Id"},
    ),
    ("bad-idempotency-key", {"json": GOOD, "headers": {"Idempotency-Key": "x"}}, 422, {"Idempotency-Key"}),
    ("huge-body", body(meta={"blob": "x" * SIGNAL_MAX_BYTES}), 413, set()),
    ("form-content-type", {"data": {"name": "x"}}, 415, set()),
    ("octet-stream", {"data": json.dumps(GOOD).encode()}, 415, set()),
    ("html-content-type", {"data": json.dumps(GOOD), "headers": {"Content-Type": "text/html"}}, 415, set()),
]

ASK_CASES: list[tuple[str, dict[str, Any], int, set[str]]] = [
    ("truncated-json", raw('{"message": "Ol'), 400, set()),
    ("empty-body", raw(""), 400, set()),
    ("nan", raw('{"message": "x", "stream": NaN}'), 400, set()),
    ("message-type", {"json": {"message": 5}}, 422, {"message"}),
    ("user-id-type", {"json": {"message": "x", "user_id": 5}}, 422, {"user_id"}),
    ("texto-type", {"json": {"texto": ["x"]}}, 422, {"texto"}),
    ("session-meta-type", {"json": {"message": "x", "sessionMeta": "s"}}, 422, {"sessionMeta"}),
    ("client-hour-type", {"json": {"message": "x", "clientHour": "noon"}}, 422, {"clientHour"}),
    ("message-id-alias-type", {"json": {"message": "x", "clientMessageId": 5}}, 422, {"clientMessageId"}),
    ("stream-type", {"json": {"message": "x", "stream": "maybe"}}, 422, {"stream"}),
    (
        "client-message-id-type",
        {"json": {"message": "x", "client_message_id": 5}},
        422,
        {"client_message_id"},
    ),
    ("messages-type", {"json": {"messages": "oi"}}, 422, {"messages"}),
    ("messages-role", {"json": {"messages": [{"role": "robot", "content": "x"}]}}, 422, {"messages"}),
    ("messages-no-user", {"json": {"messages": [{"role": "assistant", "content": "x"}]}}, 422, {"message"}),
    ("messages-empty", {"json": {"messages": []}}, 422, {"messages"}),
    ("missing-message", {"json": {}}, 422, {"message"}),
    ("blank-message", {"json": {"message": "   "}}, 422, {"message"}),
    ("message-too-long", {"json": {"message": "x" * 16_001}}, 422, {"message"}),
    ("nul-in-message", {"json": {"message": "a\x00b"}}, 422, {"message"}),
    ("nul-in-history", {"json": {"messages": [{"role": "user", "content": "\x00"}]}}, 422, {"messages"}),
    ("lone-surrogate", raw('{"message": "\\udc00"}'), 422, {"message"}),
    ("array-body", {"json": [{"message": "x"}]}, 422, {"_schema"}),
    (
        "deeper-than-parser",
        raw('{"message": "x", "messages": ' + "[" * 3000 + "]" * 3000 + "}"),
        422,
        {"_schema"},
    ),
    ("huge-body", raw_stream(json.dumps({"message": "x" * ASK_MAX_BYTES})), 413, set()),
    (
        "text-plain",
        {"data": json.dumps({"message": "x"}), "headers": {"Content-Type": "text/plain"}},
        415,
        set(),
    ),
]


async def assert_error(resp: ClientResponse, status: int) -> dict[str, Any]:
    """The SPEC's error answer: the status, a JSON body with an `error` code, and no trace of the server."""
    text = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == "application/json", text
    assert "Traceback" not in text and 'File "' not in text
    document = json.loads(text)
    assert isinstance(document["error"], str) and isinstance(document["message"], str)
    return document


async def check_rejected(
    client: TestClient, db: Any, path: str, request: dict[str, Any], status: int, fields: set[str]
) -> None:
    document = await assert_error(await client.post(path, **request), status)
    if status == 422:
        assert document["error"] == "validation_failed"
        assert set(document["details"]) == fields, document
        assert all(isinstance(messages, list | dict) for messages in document["details"].values())
    assert await scalar(db, "select count(*) from eco_outbox.events") == 0, "nothing rejected is queued"


async def test_signal_bad_input(client: TestClient, db: Any, subtests: pytest.Subtests) -> None:
    """One app for all cases (a database per case would cost more than the cases); each reports alone."""
    for case, request, status, fields in SIGNAL_CASES:
        with subtests.test(msg=case):
            await check_rejected(client, db, "/api/signal", request, status, fields)


async def test_ask_bad_input(client: TestClient, db: Any, subtests: pytest.Subtests) -> None:
    for case, request, status, fields in ASK_CASES:
        with subtests.test(msg=case):
            await check_rejected(client, db, "/api/ask-eco", request, status, fields)


@pytest.mark.parametrize(
    ("path", "limit"), [("/api/signal", SIGNAL_MAX_BYTES), ("/api/ask-eco", ASK_MAX_BYTES)]
)
async def test_huge_chunked_body_is_413(client: TestClient, db: Any, path: str, limit: int) -> None:
    payload = json.dumps({"message": "x" * limit}).encode()
    resp = await client.post(path, data=chunked(payload), headers={"Content-Type": "application/json"})
    await assert_error(resp, 413)
    assert await scalar(db, "select count(*) from eco_outbox.events") == 0


ROUTING_CASES = [
    ("GET", "/api/nope", 404),
    ("POST", "/api/nope", 404),
    ("GET", "/api/signal", 405),
    ("PUT", "/api/signal", 405),
    ("PATCH", "/api/ask-eco", 405),
    ("DELETE", "/api/ask-eco", 405),
]


async def test_routing_errors_are_json(client: TestClient, subtests: pytest.Subtests) -> None:
    for method, path, status in ROUTING_CASES:
        with subtests.test(msg=f"{method} {path}"):
            resp = await client.request(method, path)
            await assert_error(resp, status)
            if status == 405:
                assert "POST" in resp.headers["Allow"]
