// A client that behaves as the ECO production app (Bigajax/ecofrontend888) does, as ../shared/ECO_CONTRACT.md
// describes it: its identity headers (src/lib/guestId.ts), the chat stream, and the four calls that follow
// a reply: feedback (src/api/feedback.ts), module usage (src/api/moduleUsage.ts), passive signals
// (src/api/passiveSignals.ts) and the health check (src/utils/health.ts). Written here, not the app's code:
// the same paths, headers, bodies, answers expected and timing, in plain JS.
"use strict";

const log = []; // every call made, with its answer: what the test reads
window.ecoLog = log;

// --- identity (buildIdentityHeaders) ---
const identity = { guestId: crypto.randomUUID(), sessionId: crypto.randomUUID(), biasHint: null };

function identityHeaders() {
  const headers = {
    "Content-Type": "application/json",
    "X-Eco-Guest-Id": identity.guestId,
    "X-Eco-Session-Id": identity.sessionId,
    "X-Client-Id": "webapp",
  };
  if (identity.biasHint) headers["X-Eco-Bias-Hint"] = identity.biasHint;
  return headers;
}

let apiBase = "";
const url = (path) => `${apiBase}${path}`;

// fetch with an abort after `ms`; a network error or the abort rejects, as fetch does.
async function fetchWithTimeout(target, init, ms) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), ms);
  try {
    return await fetch(target, { ...init, signal: controller.signal });
  } finally {
    clearTimeout(timer);
  }
}

// --- the chat stream: reads `event:`/`data:` frames split on "\n\n" ---
function decodeFrame(frame) {
  const data = [];
  for (const line of frame.split("\n")) {
    if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  return data.length ? JSON.parse(data.join("\n")) : null;
}

function interactionIdOf(event) {
  const found = event.interaction_id ?? event.interactionId ?? (event.meta && event.meta.interaction_id);
  return typeof found === "string" && found.trim() ? found.trim() : null;
}

// Streams one reply. `onFirstChunk` runs when the reply first shows, before its interaction id is known.
async function askEco(prompt, { onFirstChunk } = {}) {
  const clientMessageId = crypto.randomUUID();
  const item = { id: clientMessageId, role: "user", content: prompt, client_message_id: clientMessageId };
  const response = await fetch(url("/api/ask-eco"), {
    method: "POST",
    headers: { ...identityHeaders(), Accept: "text/event-stream", "X-Eco-Client-Message-Id": clientMessageId },
    body: JSON.stringify({
      history: [item],
      mensagens: [item],
      texto: prompt,
      clientHour: new Date().getHours(),
      clientTz: Intl.DateTimeFormat().resolvedOptions().timeZone,
      clientMessageId,
      contexto: null,
      guestId: identity.guestId,
      isGuest: true,
      stream: true,
    }),
  });
  log.push({ kind: "ask", status: response.status });
  if (!response.ok) throw new Error(`ask-eco HTTP ${response.status}`);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let interactionId = null;
  let done = null;
  let chunks = 0;
  for (;;) {
    const { value, done: ended } = await reader.read();
    if (ended) break;
    buffer += decoder.decode(value, { stream: true });
    let boundary;
    while ((boundary = buffer.indexOf("\n\n")) >= 0) {
      const event = decodeFrame(buffer.slice(0, boundary));
      buffer = buffer.slice(boundary + 2);
      if (!event) continue;
      if (["chunk", "control", "done"].includes(event.type)) interactionId = interactionIdOf(event) || interactionId;
      if (event.type === "chunk" && chunks++ === 0 && onFirstChunk) onFirstChunk();
      if (event.type === "done") done = event;
    }
  }
  if (!done) throw new Error("the stream ended without done");
  return { interactionId, done };
}

// The modules a reply names: its done's module_combo, positions from 1 (src/utils/moduleUsage.ts).
function modulesOf(done) {
  const combo = (done.meta && done.meta.module_combo) || (done.payload && done.payload.module_combo) || [];
  return combo
    .filter((key) => typeof key === "string" && /^[A-Za-z0-9_.:-]+$/.test(key))
    .map((moduleKey, index) => ({ moduleKey, position: index + 1 }));
}

// --- module usage: one POST per module, wants a 204, 2.5 s timeout ---
async function sendModuleUsage({ moduleKey, position, tokens, interactionId, messageId }) {
  const body = { moduleKey, position, tokens, sessionId: identity.sessionId, interactionId, messageId };
  try {
    const response = await fetchWithTimeout(
      url("/api/module-usage"),
      { method: "POST", headers: identityHeaders(), body: JSON.stringify(body) },
      2500,
    );
    log.push({ kind: "module-usage", status: response.status, ok: response.status === 204 });
  } catch (error) {
    log.push({ kind: "module-usage", status: 0, ok: false, error: String(error) });
  }
}

// --- feedback: debounced 300 ms per interaction, retried once on a network error, only 204 counts ---
const FEEDBACK_DEBOUNCE_MS = 300;
const FEEDBACK_RETRY_MS = 300;
const pendingFeedback = new Map();

async function postFeedbackOnce(args) {
  const headers = identityHeaders();
  if (!args.user_id) headers["X-Guest-Id"] = args.session_id || identity.sessionId;
  let response;
  try {
    response = await fetch(url("/api/feedback"), { method: "POST", headers, body: JSON.stringify(args) });
  } catch (error) {
    return { ok: false, status: 0, errorMessage: String(error) };
  }
  if (response.status === 204) return { ok: true, status: 204 };
  const text = await response.text();
  let message = text.trim();
  try {
    const parsed = JSON.parse(text);
    const first = parsed.error ?? parsed.message ?? parsed.detail;
    if (typeof first === "string" && first.trim()) message = first;
  } catch {
    /* not JSON: the text is the message */
  }
  return { ok: false, status: response.status, errorMessage: message };
}

async function flushFeedback(interactionId) {
  const entry = pendingFeedback.get(interactionId);
  pendingFeedback.delete(interactionId);
  let result = await postFeedbackOnce(entry.args);
  let attempts = 1;
  if (!result.ok && result.status === 0) {
    await new Promise((resolve) => setTimeout(resolve, FEEDBACK_RETRY_MS));
    result = await postFeedbackOnce(entry.args);
    attempts += 1;
  }
  log.push({ kind: "feedback", attempts, ...result });
  entry.resolve(result);
}

function sendFeedback(input) {
  const args = {
    interaction_id: input.interaction_id.trim(),
    vote: input.vote,
    reason: input.reason ?? null,
    session_id: input.session_id ?? identity.sessionId,
    user_id: input.user_id ?? null,
    source: input.source || "api",
  };
  for (const key of ["meta", "message_id", "pillar", "arm"]) if (input[key]) args[key] = input[key];
  const existing = pendingFeedback.get(args.interaction_id);
  if (existing) {
    clearTimeout(existing.timer);
    existing.args = args;
    existing.timer = setTimeout(() => flushFeedback(args.interaction_id), FEEDBACK_DEBOUNCE_MS);
    return existing.promise;
  }
  const entry = { args };
  entry.promise = new Promise((resolve) => (entry.resolve = resolve));
  entry.timer = setTimeout(() => flushFeedback(args.interaction_id), FEEDBACK_DEBOUNCE_MS);
  pendingFeedback.set(args.interaction_id, entry);
  return entry.promise;
}

// --- passive signals: queued, flushed every 2 s, one POST /signal per interaction, keepalive, 5 s ---
const SIGNAL_FLUSH_MS = 2000;
const SIGNAL_TIMEOUT_MS = 5000;
const SERVER_BACKOFF_MS = 60_000;
const SAMPLED = new Set(["view", "copy", "time_on_message"]); // the first of every three is sent
const sampleCounters = {};
let queue = [];
let flushTimer = null;
let silentUntil = 0;

function sampled(signal) {
  if (!SAMPLED.has(signal)) return true;
  const next = (sampleCounters[signal] || 0) + 1;
  sampleCounters[signal] = next >= 3 ? 0 : next;
  return next === 1;
}

async function flushSignals() {
  flushTimer = null;
  const events = queue;
  queue = [];
  if (Date.now() < silentUntil) return;
  const groups = new Map();
  for (const event of events) {
    if (!groups.has(event.interaction_id)) groups.set(event.interaction_id, []);
    groups.get(event.interaction_id).push(event);
  }
  for (const [interactionId, group] of groups) {
    const body = group.length === 1 ? group[0] : { events: group };
    try {
      const response = await fetchWithTimeout(
        url("/signal"),
        {
          method: "POST",
          headers: { ...identityHeaders(), "X-Eco-Interaction-Id": interactionId },
          body: JSON.stringify(body),
          keepalive: true,
        },
        SIGNAL_TIMEOUT_MS,
      );
      if (response.status === 500) silentUntil = Date.now() + SERVER_BACKOFF_MS;
      log.push({ kind: "signal", interactionId, signals: group.map((e) => e.signal), status: response.status });
    } catch (error) {
      log.push({ kind: "signal", interactionId, signals: group.map((e) => e.signal), status: 0, error: String(error) });
    }
  }
}

function sendPassiveSignal({ signal, value, interactionId, messageId, meta }) {
  if (!interactionId || !sampled(signal)) return false;
  const event = { signal, interaction_id: interactionId, session_id: identity.sessionId };
  if (typeof value === "number" && Number.isFinite(value)) event.value = value;
  if (messageId) event.message_id = messageId;
  if (meta && Object.keys(meta).length) event.meta = meta;
  queue.push(event);
  if (flushTimer === null) flushTimer = setTimeout(flushSignals, SIGNAL_FLUSH_MS);
  return true;
}

// --- health: 2xx and either JSON with a truthy ok or the text ok ---
async function pingHealth() {
  try {
    const response = await fetchWithTimeout(
      url("/api/health"),
      { method: "GET", headers: { Accept: "text/plain, application/json;q=0.8" }, keepalive: true },
      5000,
    );
    let up = false;
    if (response.ok) {
      const text = await response.text();
      try {
        up = Boolean(JSON.parse(text).ok);
      } catch {
        up = text.trim() === "ok";
      }
    }
    const status = up ? "ok" : response.ok ? "degraded" : "down";
    log.push({ kind: "health", status: response.status, health: status });
    return status;
  } catch (error) {
    log.push({ kind: "health", status: 0, health: "down", error: String(error) });
    return "down";
  }
}

// One conversation as a guest uses the app: the reply streams (its `view` is queued while its id is still
// the local one), then the app posts its module usages; the user copies the reply, reads it, clicks like
// and changes it to dislike at once (debounced), and the health check runs.
async function converse(base, prompt) {
  apiBase = base;
  const localId = `eco-${crypto.randomUUID()}`;
  const { interactionId, done } = await askEco(prompt, {
    onFirstChunk: () => sendPassiveSignal({ signal: "view", interactionId: localId }),
  });
  const modules = modulesOf(done);
  await Promise.all(modules.map((m) => sendModuleUsage({ ...m, interactionId, messageId: localId })));
  sendPassiveSignal({ signal: "copy", interactionId, messageId: localId });
  sendPassiveSignal({ signal: "time_on_message", value: 4200, interactionId, messageId: localId });
  const arm = modules.length ? modules[modules.length - 1].moduleKey : undefined;
  const vote = (choice, reason) =>
    sendFeedback({
      interaction_id: interactionId,
      vote: choice,
      reason,
      message_id: localId,
      pillar: "geral",
      arm,
      meta: { module_combo: modules.map((m) => m.moduleKey), message_id: localId, ui: "chat" },
    });
  const like = vote("up", null);
  const dislike = vote("down", "too_long");
  const feedback = await dislike;
  const health = await pingHealth();
  return { interactionId, localId, modules, feedback, health, debounced: like === dislike };
}

window.ecoApp = { converse, pingHealth, log };
