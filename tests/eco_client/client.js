// A client that behaves as the ECO web app does (its web/src/api/ecoStream.ts, chatStreamClient.ts,
// signals.ts and utils/guest.ts, as ../shared/ECO_CONTRACT.md describes them), written here to drive
// eco-outbox from another origin in a browser. Not the app's code: the same behaviour, in plain JS.
"use strict";

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i;
const store = { guestId: null, sessionId: null };

function remember(response) {
  // The app keeps a guest id only when it is a uuid v4, and a session id when there is one.
  const guest = (response.headers.get("x-eco-guest-id") || "").trim();
  if (UUID_V4.test(guest)) store.guestId = guest;
  const session = (response.headers.get("x-eco-session-id") || "").trim();
  if (session) store.sessionId = session;
}

function identityHeaders() {
  const headers = {};
  if (store.guestId) headers["X-Eco-Guest-Id"] = store.guestId;
  if (store.sessionId) headers["X-Eco-Session-Id"] = store.sessionId;
  return headers;
}

function decodePacket(packet) {
  // One SSE frame: its `event:` and `data:` lines; data is JSON with a `type`.
  const data = [];
  let event = "message";
  for (const line of packet.split("\n")) {
    if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    else if (line.startsWith("event:")) event = line.slice(6).trim();
  }
  return data.length ? { event, payload: JSON.parse(data.join("\n")) } : null;
}

async function postSignal(base, signal, interactionId) {
  const body = { signal };
  if (interactionId) body.interaction_id = interactionId;
  if (store.sessionId) body.session_id = store.sessionId;
  const headers = { "Content-Type": "application/json", ...identityHeaders() };
  if (interactionId) headers["X-Eco-Interaction-Id"] = interactionId;
  const response = await fetch(`${base}/api/signal`, {
    method: "POST",
    headers,
    body: JSON.stringify(body),
    credentials: "include",
  });
  remember(response);
  return response.status;
}

async function askEco(base, prompt, token) {
  const clientMessageId = crypto.randomUUID();
  const body = {
    messages: [{ id: clientMessageId, role: "user", content: prompt }],
    clientMessageId,
    nome_usuario: "Ana",
    isGuest: true,
    guestId: store.guestId,
    sessionMeta: { origin: location.origin },
    clientHour: new Date().getHours(),
    stream: true,
  };
  const response = await fetch(`${base}/api/ask-eco`, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      Authorization: `Bearer ${token}`,
      "X-Eco-Client-Message-Id": clientMessageId,
      ...identityHeaders(),
    },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`Eco stream HTTP ${response.status}`);
  remember(response);

  const events = [];
  let lastIndex = null;
  let interactionId = null;
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let boundary = buffer.indexOf("\n\n");
    while (boundary >= 0) {
      const frame = decodePacket(buffer.slice(0, boundary));
      buffer = buffer.slice(boundary + 2);
      if (frame) {
        const data = frame.payload;
        if (data.type === "chunk") {
          // The app drops a chunk whose index is not above the last one.
          if (lastIndex !== null && data.index <= lastIndex) throw new Error(`chunk index ${data.index} dropped`);
          lastIndex = data.index;
        }
        events.push(data.type);
        if (data.type === "done") {
          // The id for the app's own signals comes from here, and from nowhere else.
          const raw = data.meta && data.meta.interaction_id;
          interactionId = typeof raw === "string" && raw.trim() ? raw.trim() : null;
        }
      }
      boundary = buffer.indexOf("\n\n");
    }
  }
  const statuses = [];
  for (const signal of ["first_token", "done", "view"]) {
    statuses.push(await postSignal(base, signal, interactionId));
  }
  return { events, interactionId, statuses, guestId: store.guestId, sessionId: store.sessionId };
}

window.askEco = askEco;
