"""Every request shape of ../shared/ECO_CONTRACT.md, one row per alias: what the ECO web app sends and the ECO
backend accepted reaches the target as it would have there; the stream is what the app reads; GET, HEAD and
OPTIONS on /api/ask-eco; CORS with credentials for the configured origins, patterns included."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.helpers import fetch, insert_interaction, read_sse, scalar, wait_for

PROMPT = "Olá, ECO"
JSON_ONLY = {"stream": False}


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


async def interaction(db: Any, iid: str) -> dict[str, Any]:
    """The interaction once its completion has reached the target."""
    rows = await wait_for(
        lambda: fetch(
            db,
            "select prompt_hash, message_id, user_id::text, meta, tokens_out"
            " from analytics.eco_interactions where id = %s",
            (iid,),
        ),
        lambda rows: bool(rows) and rows[0][4] is not None,
    )
    return dict(zip(("prompt_hash", "message_id", "user_id", "meta", "tokens_out"), rows[0], strict=True))


async def ask(client: TestClient, body: dict[str, Any], headers: dict[str, str] | None = None) -> str:
    resp = await client.post("/api/ask-eco", json={**JSON_ONLY, **body}, headers=headers)
    answer = await resp.json()
    assert resp.status == 200, answer
    return answer["interaction_id"]


# ask-eco: where the prompt comes from ---

MESSAGE_SOURCES: list[tuple[str, dict[str, Any], str]] = [
    *(
        (f"messages[].{key}", {"messages": [{"role": "user", key: PROMPT}]}, PROMPT)
        for key in ("content", "text", "mensagem", "message", "delta", "value")
    ),
    ("mensagens", {"mensagens": [{"role": "user", "content": PROMPT}]}, PROMPT),
    ("role-defaults-to-user", {"messages": [{"content": PROMPT}]}, PROMPT),
    (
        "last-non-empty-user-message",
        {
            "messages": [
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "reply"},
                {"role": "user", "text": PROMPT},
                {"role": "user", "content": ""},
            ]
        },
        PROMPT,
    ),
    ("messages-win-over-text", {"messages": [{"content": PROMPT}], "text": "other"}, PROMPT),
    (
        "messages-without-user-text",
        {"messages": [{"role": "assistant", "content": "x"}], "texto": PROMPT},
        PROMPT,
    ),
    *((key, {key: PROMPT}, PROMPT) for key in ("text", "texto", "mensagem", "message")),
]


@pytest.mark.parametrize(
    ("body", "prompt"), [row[1:] for row in MESSAGE_SOURCES], ids=[r[0] for r in MESSAGE_SOURCES]
)
async def test_ask_message_sources(client: TestClient, db: Any, body: dict[str, Any], prompt: str) -> None:
    iid = await ask(client, body)
    assert (await interaction(db, iid))["prompt_hash"] == prompt_hash(prompt)


# ask-eco: client message id ---

CLIENT_MESSAGE_IDS: list[tuple[str, dict[str, Any], dict[str, str], str]] = [
    *(
        (key, {"message": PROMPT, key: "cm-1"}, {}, "cm-1")
        for key in ("clientMessageId", "client_message_id")
    ),
    *((key, {"message": PROMPT, key: "cm-1"}, {}, "cm-1") for key in ("messageId", "message_id")),
    ("header", {"message": PROMPT}, {"X-Eco-Client-Message-Id": "cm-1"}, "cm-1"),
    (
        "last-messages-id",
        {"messages": [{"content": "a", "id": "cm-0"}, {"content": PROMPT, "id": "cm-1"}]},
        {},
        "cm-1",
    ),
    (
        "header-wins",
        {"message": PROMPT, "clientMessageId": "body"},
        {"X-Eco-Client-Message-Id": "cm-1"},
        "cm-1",
    ),
    ("first-alias-wins", {"message": PROMPT, "clientMessageId": "cm-1", "message_id": "other"}, {}, "cm-1"),
]


@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [row[1:] for row in CLIENT_MESSAGE_IDS],
    ids=[r[0] for r in CLIENT_MESSAGE_IDS],
)
async def test_ask_client_message_id(
    client: TestClient, db: Any, body: dict[str, Any], headers: dict[str, str], expected: str
) -> None:
    resp = await client.post("/api/ask-eco", json={**JSON_ONLY, **body}, headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["X-Eco-Client-Message-Id"] == expected
    iid = (await resp.json())["interaction_id"]
    assert (await interaction(db, iid))["message_id"] == expected
    again = await client.post("/api/ask-eco", json={**JSON_ONLY, **body}, headers=headers)
    assert again.status == 409
    assert (await again.json())["error"] == "duplicate_client_message_id"


async def test_ask_without_a_client_message_id_stores_none(client: TestClient, db: Any) -> None:
    iid = await ask(client, {"message": PROMPT})
    assert (await interaction(db, iid))["message_id"] is None


# ask-eco: user ---

USER = str(uuid.uuid4())
USERS: list[tuple[str, dict[str, Any], dict[str, str], str | None]] = [
    *((key, {key: USER}, {}, USER) for key in ("usuario_id", "usuarioId", "user_id", "userId")),
    ("header", {}, {"X-Eco-User-Id": USER}, USER),
    ("body-wins-over-header", {"usuario_id": USER}, {"X-Eco-User-Id": str(uuid.uuid4())}, USER),
    *(
        (f"{key}-not-a-uuid", {key: "user-42"}, {}, None)
        for key in ("usuario_id", "usuarioId", "user_id", "userId")
    ),
    ("header-not-a-uuid", {}, {"X-Eco-User-Id": "user-42"}, None),
    ("isGuest-drops-the-user", {"usuario_id": USER, "isGuest": True}, {}, None),
    ("isGuest-false-keeps-it", {"usuario_id": USER, "isGuest": False}, {}, USER),
]


@pytest.mark.parametrize(("body", "headers", "expected"), [r[1:] for r in USERS], ids=[r[0] for r in USERS])
async def test_ask_user(
    client: TestClient, db: Any, body: dict[str, Any], headers: dict[str, str], expected: str | None
) -> None:
    iid = await ask(client, {"message": PROMPT, **body}, headers)
    assert (await interaction(db, iid))["user_id"] == expected


# ask-eco: the ECO extras ---

EXTRAS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("sessionMeta", {"sessionMeta": {"device": "ios", "n": 2}}, {"sessionMeta": {"device": "ios", "n": 2}}),
    ("clientHour", {"clientHour": 21}, {"clientHour": 21}),
    ("client_hour", {"client_hour": 7.5}, {"clientHour": 7.5}),
    ("isGuest", {"isGuest": True}, {"isGuest": True}),
    ("isGuest-as-text", {"isGuest": "true"}, {"isGuest": True}),
    (
        "guestId",
        {"guestId": "8b0f6a5e-2b4f-4c53-9a0e-8f3c2d1e0b7a"},
        {"guestId": "8b0f6a5e-2b4f-4c53-9a0e-8f3c2d1e0b7a"},
    ),
    ("nome_usuario-not-stored", {"nome_usuario": "Ana"}, {}),
    ("contexto-not-stored", {"contexto": {"humor": "calmo"}}, {}),
    ("contexto-null", {"contexto": None}, {}),
]
EXTRA_KEYS = {"sessionMeta", "clientHour", "isGuest", "guestId"}


@pytest.mark.parametrize(("body", "kept"), [r[1:] for r in EXTRAS], ids=[r[0] for r in EXTRAS])
async def test_ask_extras_in_meta(
    client: TestClient, db: Any, body: dict[str, Any], kept: dict[str, Any]
) -> None:
    iid = await ask(client, {"message": PROMPT, **body})
    meta = (await interaction(db, iid))["meta"]
    assert {key: meta[key] for key in EXTRA_KEYS if key in meta} == kept
    stored = json.dumps(meta)
    assert "Ana" not in stored and "calmo" not in stored, "personal data stays out of analytics"


STREAM_FLAGS: list[tuple[Any, bool]] = [
    (True, True),
    (1, True),
    ("true", True),
    ("1", True),
    ("yes", True),
    (False, False),
    (0, False),
    ("false", False),
    ("no", False),
]


@pytest.mark.parametrize(("flag", "streams"), STREAM_FLAGS, ids=[repr(f) for f, _ in STREAM_FLAGS])
async def test_ask_stream_flag(client: TestClient, flag: Any, streams: bool) -> None:
    resp = await client.post("/api/ask-eco", json={"message": PROMPT, "stream": flag})
    assert resp.status == 200
    if streams:
        assert resp.content_type == "text/event-stream"
        assert [e.event for e in await read_sse(resp)][-1] == "done"
    else:
        assert resp.content_type == "application/json"
        assert (await resp.json())["meta"]["finishReason"] == "stop"


async def test_ask_stream_from_the_query(client: TestClient) -> None:
    resp = await client.post("/api/ask-eco?stream=1", json={"message": PROMPT})
    assert resp.content_type == "text/event-stream"
    await read_sse(resp)


# The stream as the app reads it ---


async def test_stream_as_the_app_reads_it(client: TestClient) -> None:
    resp = await client.post("/api/ask-eco", json={"texto": PROMPT, "stream": True})
    assert resp.status == 200
    iid = resp.headers["X-Eco-Interaction-Id"]
    assert uuid.UUID(resp.headers["X-Eco-Guest-Id"]).version == 4
    raw = await resp.text()
    # The app splits on "\n\n" exactly (LF only): every frame, the last one included, ends with it.
    assert raw.endswith("\n\n") and "\r" not in raw
    frames = [frame for frame in raw.split("\n\n") if frame]
    datas = []
    for frame in frames:
        data = [line[len("data: ") :] for line in frame.split("\n") if line.startswith("data: ")]
        datas.append(json.loads("\n".join(data)))
    by_type: dict[str, list[dict[str, Any]]] = {}
    for data in datas:
        by_type.setdefault(data["type"], []).append(data)
    ready = by_type["prompt_ready"][0]
    assert isinstance(ready["at"], int) and ready["at"] > 1_700_000_000_000, "epoch milliseconds, a number"
    indexes = [chunk["index"] for chunk in by_type["chunk"]]
    assert len(indexes) >= 2 and all(a < b for a, b in zip(indexes, indexes[1:], strict=False)), indexes
    [latency] = by_type["latency"]
    assert latency["stage"] in ("prompt_ready", "ttfb", "ttlc")
    assert isinstance(latency["at"], int) and latency["at"] >= ready["at"]
    assert isinstance(latency["sinceStartMs"], int)
    [done] = by_type["done"]
    assert done["meta"]["interaction_id"] == iid, "the app takes the id for its signals from here only"
    assert isinstance(done["at"], int) and done["at"] >= latency["at"]
    assert done["content"] == "".join(chunk["delta"] for chunk in by_type["chunk"])
    assert set(done["timings"]) == {"first_token_latency_ms", "total_latency_ms"}


async def test_json_mode_carries_the_id_in_meta(client: TestClient) -> None:
    resp = await client.post("/api/ask-eco", json={"message": PROMPT})
    answer = await resp.json()
    assert (
        answer["meta"]["interaction_id"] == answer["interaction_id"] == resp.headers["X-Eco-Interaction-Id"]
    )


# GET, HEAD, OPTIONS ---

GET_QUERIES: list[tuple[str, dict[str, str], str]] = [
    *((key, {key: PROMPT}, PROMPT) for key in ("texto", "text", "mensagem", "message")),
    *(
        (key, {key: json.dumps([{"role": "user", "content": PROMPT}])}, PROMPT)
        for key in ("messages", "mensagens")
    ),
    ("payload", {"payload": json.dumps({"mensagens": [{"text": PROMPT}], "usuario_id": USER})}, PROMPT),
    ("payload-and-a-parameter-over-it", {"payload": json.dumps({"texto": "other"}), "texto": PROMPT}, PROMPT),
]


@pytest.mark.parametrize(("query", "prompt"), [r[1:] for r in GET_QUERIES], ids=[r[0] for r in GET_QUERIES])
async def test_get_streams_from_a_query(
    client: TestClient, db: Any, query: dict[str, str], prompt: str
) -> None:
    resp = await client.get("/api/ask-eco", params=query)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "text/event-stream"
    events = await read_sse(resp)
    assert [events[0].event, events[-1].event] == ["prompt_ready", "done"]
    row = await interaction(db, resp.headers["X-Eco-Interaction-Id"])
    assert row["prompt_hash"] == prompt_hash(prompt)


async def test_get_takes_ids_and_name_from_the_query(client: TestClient, db: Any) -> None:
    query = {"texto": PROMPT, "client_message_id": "cm-get", "usuario_id": USER, "nome_usuario": "Ana"}
    resp = await client.get("/api/ask-eco", params=query)
    await read_sse(resp)
    row = await interaction(db, resp.headers["X-Eco-Interaction-Id"])
    assert (row["message_id"], row["user_id"]) == ("cm-get", USER)
    assert "Ana" not in json.dumps(row["meta"])


GET_BAD: list[tuple[str, dict[str, str], str]] = [
    ("messages-not-json", {"messages": "[{"}, "messages"),
    ("payload-not-json", {"payload": "{"}, "payload"),
    ("payload-not-an-object", {"payload": "[1]"}, "payload"),
    ("no-prompt", {"nome_usuario": "Ana"}, "message"),
    ("nul", {"texto": "a\x00b"}, "texto"),
]


@pytest.mark.parametrize(("query", "field"), [r[1:] for r in GET_BAD], ids=[r[0] for r in GET_BAD])
async def test_get_bad_query_is_a_422(client: TestClient, db: Any, query: dict[str, str], field: str) -> None:
    resp = await client.get("/api/ask-eco", params=query)
    answer = await resp.json()
    assert resp.status == 422, answer
    assert field in answer["details"], answer
    assert await scalar(db, "select count(*) from eco_outbox.events") == 0


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS"])
async def test_head_and_options_answer_204(client: TestClient, db: Any, method: str) -> None:
    resp = await client.request(method, "/api/ask-eco")
    assert resp.status == 204
    assert await scalar(db, "select count(*) from eco_outbox.events") == 0, "nothing is started"


# Signals ---

IID = str(uuid.uuid4())
OTHER = str(uuid.uuid4())
SIGNALS: list[tuple[str, dict[str, Any], dict[str, str], str, dict[str, Any]]] = [
    ("app-lifecycle-shape", {"signal": "first_token", "interaction_id": IID}, {}, "first_token", {}),
    ("interactionId", {"name": "view", "interactionId": IID}, {}, "view", {}),
    ("name-wins-over-signal", {"name": "view", "signal": "done", "interaction_id": IID}, {}, "view", {}),
    (
        "session_id",
        {"signal": "done", "interaction_id": IID, "session_id": "s-1"},
        {},
        "done",
        {"session_id": "s-1"},
    ),
    ("value", {"signal": "view", "interaction_id": IID, "value": 3}, {}, "view", {"value": 3.0}),
    *(
        (key, {"signal": "view", "interaction_id": IID, key: "r-1"}, {}, "view", {"response_id": "r-1"})
        for key in ("response_id", "responseId")
    ),
    *(
        (key, {"signal": "view", "interaction_id": IID, key: "u-1"}, {}, "view", {"user_id": "u-1"})
        for key in ("user_id", "userId")
    ),
    *(
        (
            key,
            {"signal": "copy", "interaction_id": IID, key: "eco-m-1"},
            {},
            "copy",
            {"message_id": "eco-m-1"},
        )
        for key in ("message_id", "messageId")
    ),
    *(
        (key, {"signal": "view", "interaction_id": IID, key: "g-body"}, {}, "view", {"guest_id": "g-body"})
        for key in ("guest_id", "guestId")
    ),
    # The production app's passive signals carry the reply's local id (see tests/test_local_reply_id.py).
    *(
        (
            key,
            {"signal": "copy", "interaction_id": IID, key: "eco-local"},
            {},
            "copy",
            {"message_id": "eco-local"},
        )
        for key in ("message_id", "messageId")
    ),
    (
        "guest-header-wins",
        {"signal": "view", "interaction_id": IID, "guestId": "g-body"},
        {"X-Eco-Guest-Id": "g-head"},
        "view",
        {"guest_id": "g-head", "guest_id_header": "g-head"},
    ),
    (
        "guest_id_header-keeps-the-client-meta",
        {"signal": "view", "interaction_id": IID, "meta": {"guest_id_header": "mine"}},
        {"X-Eco-Guest-Id": "g-head"},
        "view",
        {"guest_id_header": "mine"},
    ),
    (
        "session-header",
        {"signal": "view", "interaction_id": IID},
        {"X-Eco-Session-Id": "s-head"},
        "view",
        {"session_id_header": "s-head"},
    ),
    (
        "interaction-header-wins",
        {"signal": "view", "interaction_id": OTHER, "interactionId": OTHER},
        {"X-Eco-Interaction-Id": IID},
        "view",
        {},
    ),
    (
        "type-and-ts",
        {"signal": "view", "interaction_id": IID, "type": "ui", "ts": "2026-01-02T03:04:05+00:00"},
        {},
        "view",
        {"type": "ui", "ts": "2026-01-02T03:04:05+00:00"},
    ),
    (
        "unknown-fields-ignored",
        {"signal": "view", "interaction_id": IID, "foo": [1], "bar": None},
        {},
        "view",
        {},
    ),
]


@pytest.mark.parametrize(
    ("body", "headers", "name", "meta"), [r[1:] for r in SIGNALS], ids=[r[0] for r in SIGNALS]
)
async def test_signal_aliases_land(
    client: TestClient,
    db: Any,
    body: dict[str, Any],
    headers: dict[str, str],
    name: str,
    meta: dict[str, Any],
) -> None:
    await insert_interaction(db, IID)
    resp = await client.post("/api/signal", json=body, headers=headers)
    answer = await resp.json()
    assert resp.status == 202, answer
    rows = await wait_for(
        lambda: fetch(
            db,
            "select interaction_id::text, signal, meta from analytics.eco_passive_signals where id = %s",
            (answer["id"],),
        )
    )
    assert [(iid, signal) for iid, signal, _ in rows] == [(IID, name)]
    assert rows[0][2] == {"type": "passive", **meta}


# CORS ---

APP_ORIGINS = [
    "http://localhost:5173",
    "http://localhost:5174",
    "http://localhost:4173",
    "http://localhost:4174",
]


def preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "content-type,x-eco-guest-id,x-eco-session-id,x-eco-interaction-id",
    }


@pytest.mark.parametrize("origin", APP_ORIGINS)
async def test_cors_allows_the_app_origins_with_credentials_by_default(
    client: TestClient, origin: str
) -> None:
    ok = await client.options("/api/signal", headers=preflight(origin))
    assert ok.status == 200
    assert ok.headers["Access-Control-Allow-Origin"] == origin
    assert ok.headers["Access-Control-Allow-Credentials"] == "true"
    resp = await client.post(
        "/api/signal", json={"signal": "view", "interaction_id": IID}, headers={"Origin": origin}
    )
    assert resp.status == 202
    assert resp.headers["Access-Control-Allow-Origin"] == origin
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://eco-preview-42.vercel.app", True),
        ("https://eco.example", True),
        ("https://vercel.app", False),
        ("https://evil.example/.vercel.app", False),
        ("http://eco-preview.vercel.app", False),
        ("http://localhost:5173", False),
    ],
)
async def test_cors_origin_patterns(make_client: Any, origin: str, allowed: bool) -> None:
    client = await make_client(cors_origins=("https://*.vercel.app", "https://eco.example"))
    answer = await client.options("/api/ask-eco", headers=preflight(origin, "GET"))
    assert (answer.status == 200) is allowed
    resp = await client.post("/api/ask-eco", json={"message": PROMPT}, headers={"Origin": origin})
    assert resp.status == 200
    if allowed:
        assert resp.headers["Access-Control-Allow-Origin"] == origin
        assert resp.headers["Access-Control-Allow-Credentials"] == "true"
        assert "X-Eco-Interaction-Id" in resp.headers["Access-Control-Expose-Headers"]
    else:
        assert "Access-Control-Allow-Origin" not in resp.headers


async def test_a_null_item_content_falls_back_to_its_text(client: TestClient, db: Any) -> None:
    iid = await ask(client, {"messages": [{"role": "user", "content": None, "text": PROMPT}]})
    assert (await interaction(db, iid))["prompt_hash"] == prompt_hash(PROMPT)


async def test_get_is_rate_limited_as_post_is(make_client: Any) -> None:
    client = await make_client(rate_limit_per_s=0.01, rate_limit_burst=1.0)
    first = await client.get("/api/ask-eco", params={"texto": PROMPT})
    await read_sse(first)
    second = await client.get("/api/ask-eco", params={"texto": PROMPT})
    assert (first.status, second.status) == (200, 429)
    assert "Retry-After" in second.headers
