// The ECO demo client: streams /api/ask-eco over fetch (SSE parsed by hand, since EventSource cannot POST),
// sends passive signals as the ECO frontend does, and shows their delivery state from the outbox.
"use strict";

const POLL_INTERVAL_MS = 400;
const SETTLED_STATES = new Set(["delivered", "dead", "rejected", "failed"]);

const $ = (id) => document.getElementById(id);

function newId() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function stored(storage, key, make) {
  let value = storage.getItem(key);
  if (!value) {
    value = make();
    storage.setItem(key, value);
  }
  return value;
}

const guestId = stored(localStorage, "eco.guestId", () => `guest_${newId()}`);
const sessionId = stored(sessionStorage, "eco.sessionId", newId);
const identity = { "X-Eco-Guest-Id": guestId, "X-Eco-Session-Id": sessionId };

// The interaction on screen: its id, the page's own signals (id -> {name, state}), and the reply.
let current = null;
let pollTimer = null;

// --- SSE over a fetch body -----------------------------------------------------------------------------

function parseEvent(block) {
  let event = "message";
  let id = null;
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "id") id = value;
    else if (field === "data") data.push(value);
  }
  return data.length ? { event, id, data: JSON.parse(data.join("\n")) } : null;
}

async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r/g, "");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = parseEvent(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (event) yield event;
    }
  }
}

// --- signals -------------------------------------------------------------------------------------------

function signalBody(name, meta, value, signalId) {
  const body = {
    interaction_id: current.id,
    name,
    type: "passive",
    meta: { source: "demo-page", ...meta },
    ts: new Date().toISOString(),
    signal_id: signalId,
  };
  if (typeof value === "number" && Number.isFinite(value)) body.value = value;
  return body;
}

async function sendSignal(name, meta = {}, value = undefined) {
  if (!current) return;
  const signalId = newId();
  const interaction = current;
  interaction.signals.set(signalId, { name, state: "sending", attempts: 0 });
  renderSignals();
  try {
    const response = await fetch("/api/signal", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...identity },
      body: JSON.stringify(signalBody(name, meta, value, signalId)),
      keepalive: true,
    });
    const entry = interaction.signals.get(signalId);
    if (entry.state === "sending") entry.state = response.status === 202 ? "queued" : "rejected";
  } catch (error) {
    interaction.signals.get(signalId).state = "failed";
  }
  renderSignals();
  schedulePoll();
}

// The last word of a page that goes away: a beacon survives the unload, and its fixed id makes a second
// one (visibilitychange, then pagehide) a harmless duplicate that the outbox stores once.
function sendBeacon(reason) {
  if (!current || !navigator.sendBeacon) return;
  const meta = { reason, visible_ms: Math.round(performance.now() - current.shownAt), guest_id: guestId };
  navigator.sendBeacon("/api/signal", JSON.stringify(signalBody("page_hidden", meta, undefined, current.beaconId)));
}

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "hidden") sendBeacon("visibilitychange");
});
window.addEventListener("pagehide", () => sendBeacon("pagehide"));

// --- delivery state ------------------------------------------------------------------------------------

function schedulePoll() {
  if (!pollTimer && current) pollTimer = setTimeout(poll, POLL_INTERVAL_MS);
}

function settled(interaction) {
  return interaction.finished && [...interaction.signals.values()].every((s) => SETTLED_STATES.has(s.state));
}

async function poll() {
  pollTimer = null;
  const interaction = current;
  if (!interaction) return;
  try {
    const response = await fetch(`/api/interactions/${interaction.id}/signals`, { cache: "no-store" });
    if (response.ok) {
      const status = await response.json();
      interaction.server = status.signals.filter((s) => !interaction.signals.has(s.id));
      for (const row of status.signals) {
        const own = interaction.signals.get(row.id);
        if (own) Object.assign(own, { state: row.state, attempts: row.attempts });
      }
      renderSignals();
    }
  } catch (error) {
    // The next poll tries again.
  }
  if (interaction === current && !(settled(interaction) && interaction.serverSettled())) schedulePoll();
}

function stateBadge(state) {
  const badge = document.createElement("span");
  badge.className = `state state-${state}`;
  badge.textContent = state;
  return badge;
}

function renderSignals() {
  const rows = [];
  if (current) {
    for (const [id, s] of current.signals) rows.push({ id, from: "page", ...s });
    for (const s of current.server) rows.push({ id: s.id, from: s.type === "server" ? "server" : "other", ...s });
  }
  const tbody = $("signals");
  tbody.replaceChildren(
    ...rows.map((row) => {
      const tr = document.createElement("tr");
      tr.dataset.signalId = row.id;
      tr.dataset.name = row.name;
      tr.dataset.from = row.from;
      tr.dataset.state = row.state;
      const cells = [row.name, row.from, stateBadge(row.state), String(row.attempts ?? 0), row.id.slice(0, 8)];
      cells.forEach((content, index) => {
        const td = document.createElement("td");
        if (index === 4) td.className = "id";
        td.append(content);
        tr.append(td);
      });
      return tr;
    }),
  );
  const delivered = rows.filter((row) => row.state === "delivered").length;
  $("signals-summary").textContent = rows.length ? `${delivered} of ${rows.length} delivered` : "";
}

// --- asking --------------------------------------------------------------------------------------------

function setStatus(text) {
  $("status").textContent = text;
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = false;
}

function startInteraction(id) {
  current = {
    id,
    beaconId: newId(),
    shownAt: performance.now(),
    signals: new Map(),
    server: [],
    content: "",
    finished: false,
    serverSettled() {
      return this.server.every((s) => SETTLED_STATES.has(s.state));
    },
  };
  $("interaction-id").textContent = id;
  renderSignals();
}

function handleEvent({ event, data }) {
  if (event === "prompt_ready") {
    if (!current || current.id !== data.interaction_id) startInteraction(data.interaction_id);
    setStatus("waiting for the first token…");
    sendSignal("view", { stream_id: data.streamId });
  } else if (event === "first_token") {
    $("first-token").textContent = `${data.latency_ms} ms`;
    setStatus("streaming…");
    sendSignal("first_token", { latency_ms: data.latency_ms }, data.latency_ms);
  } else if (event === "chunk") {
    current.content += data.delta;
    $("reply").textContent = current.content;
  } else if (event === "error") {
    showError(`${data.code}: ${data.message}`);
  } else if (event === "done") {
    current.content = data.content;
    current.finished = true;
    $("reply").textContent = data.content;
    $("finish").textContent = `${data.meta.finishReason} · ${data.meta.usage.output_tokens} tokens · ${data.payload.timings.total_latency_ms} ms`;
    $("copy").disabled = false;
    setStatus("done");
    sendSignal("done", { finish_reason: data.meta.finishReason, chunks: data.index }, data.payload.timings.total_latency_ms);
  }
}

async function ask(message) {
  current = null;
  $("reply").textContent = "";
  $("error").hidden = true;
  $("copy").disabled = true;
  $("interaction-id").textContent = "—";
  $("first-token").textContent = "—";
  $("finish").textContent = "—";
  renderSignals();
  setStatus("sending…");
  const response = await fetch("/api/ask-eco", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "text/event-stream", ...identity },
    body: JSON.stringify({ message, client_message_id: newId() }),
  });
  if (!response.ok) {
    const problem = await response.json().catch(() => ({}));
    throw new Error(`HTTP ${response.status}: ${problem.message || problem.error || response.statusText}`);
  }
  // The id is in the headers before the first byte of the body, and again in prompt_ready.
  startInteraction(response.headers.get("X-Eco-Interaction-Id"));
  for await (const event of sseEvents(response.body)) handleEvent(event);
  if (!current.finished) throw new Error("the stream ended before `done`");
}

$("ask-form").addEventListener("submit", async (submitted) => {
  submitted.preventDefault();
  const message = $("message").value.trim();
  if (!message) return;
  $("send").disabled = true;
  try {
    await ask(message);
  } catch (error) {
    setStatus("failed");
    showError(error.message);
  } finally {
    $("send").disabled = false;
  }
});

$("copy").addEventListener("click", async () => {
  if (!current) return;
  let copied = true;
  try {
    await navigator.clipboard.writeText(current.content);
  } catch (error) {
    copied = false; // No clipboard permission (e.g. a headless browser): the gesture still counts.
  }
  $("copy").textContent = copied ? "Copied" : "Copy";
  sendSignal("copy", { chars: current.content.length, clipboard: copied });
});
