// The outbox admin page: asks for the admin token once (kept in sessionStorage, never a cookie or a URL),
// then polls the admin API and /readyz, and sends requeue and purge actions after a confirmation.
"use strict";

const TOKEN_KEY = "eco.adminToken";
const REFRESH_INTERVAL_MS = 2000;
const PAGE_SIZE = 50;
const DAY_S = 86400;
const SVG_NS = "http://www.w3.org/2000/svg";
const CHART_WIDTH = 600;
const CHART_HEIGHT = 120;

const $ = (id) => document.getElementById(id);

// Dead-letter paging: the after_seq of each page seen so far (the last one is on screen), and the selection.
let pageStarts = [0];
let nextAfterSeq = null;
let pageSeqs = [];
const selected = new Set();
let refreshTimer = null;
// Refreshes overlap (the timer's and an action's): only the latest renders and schedules the next one.
let refreshRun = 0;

class AuthError extends Error {}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

async function api(path, body = undefined) {
  const init = { headers: { Authorization: `Bearer ${token()}` }, cache: "no-store" };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const data = await response.json().catch(() => null);
  if (response.ok) return data;
  const text = `HTTP ${response.status}${data && data.error ? ` ${data.error}: ${data.message || ""}` : ""}`;
  if (response.status === 401 || response.status === 403) throw new AuthError(text);
  throw new Error(text);
}

function element(tag, text = "", className = "") {
  const node = document.createElement(tag);
  if (text !== "") node.textContent = text;
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    if (cell instanceof Node) td.append(cell);
    else td.textContent = cell;
    tr.append(td);
  }
  return tr;
}

function formatAge(seconds) {
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < DAY_S) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / DAY_S).toFixed(1)} d`;
}

// --- what the page shows ---------------------------------------------------------------------------------

function renderStats(stats) {
  const body = $("backlog");
  body.replaceChildren();
  let oldest = 0;
  for (const state of ["pending", "dead"]) {
    for (const [kind, entry] of Object.entries(stats[state])) {
      const tr = row([kind, element("span", state, `state state-${state}`), String(entry.rows),
        formatAge(entry.oldest_age_s)]);
      tr.dataset.kind = kind;
      tr.dataset.state = state;
      tr.dataset.rows = entry.rows;
      body.append(tr);
      if (state === "pending") oldest = Math.max(oldest, entry.oldest_age_s);
    }
  }
  if (!body.children.length) body.append(row(["nothing pending, nothing dead", "", "", ""]));
  $("oldest-pending").textContent = stats.pending_total ? formatAge(oldest) : "—";
  $("dead-summary").textContent = `${stats.dead_total} dead in all`;
}

function renderTree(value) {
  if (Array.isArray(value)) {
    const list = document.createElement("ul");
    for (const item of value) {
      const li = document.createElement("li");
      li.append(renderTree(item));
      list.append(li);
    }
    return list;
  }
  if (value !== null && typeof value === "object") {
    const dl = document.createElement("dl");
    for (const [key, item] of Object.entries(value)) {
      dl.append(element("dt", key));
      const dd = document.createElement("dd");
      dd.append(renderTree(item));
      dl.append(dd);
    }
    return dl;
  }
  return document.createTextNode(String(value));
}

function renderRelay(relay, ready) {
  const running = $("relay-running");
  running.textContent = relay.running ? "running" : "stopped";
  running.className = `state state-${relay.running ? "delivered" : "dead"}`;
  $("relay-loops").textContent = String(relay.loops);
  const last = relay.last_batch;
  $("last-batch").textContent = last
    ? `${last.claimed} claimed, ${last.delivered} delivered, ${last.retried} retried, ${last.dead} dead` +
      ` in ${(last.duration_s * 1000).toFixed(1)} ms, ${formatAge((Date.now() - Date.parse(last.finished_at)) / 1000)} ago`
    : "none yet";
  const failures = $("failures");
  failures.replaceChildren();
  for (const failure of relay.failures) {
    const labels = Object.entries(failure.labels).map(([k, v]) => `${k}=${v}`).join(", ");
    const tr = row([failure.metric, labels || "—", String(failure.count)]);
    tr.dataset.metric = failure.metric;
    tr.dataset.reason = failure.labels.reason || "";
    failures.append(tr);
  }
  if (!relay.failures.length) failures.append(row(["none", "", ""]));
  $("readyz").replaceChildren(renderTree(ready));
  renderChart(relay.delivered_per_s);
}

function renderChart({ start_unix_s: start, counts }) {
  const chart = $("chart");
  const peak = Math.max(1, ...counts);
  const width = CHART_WIDTH / counts.length;
  const total = counts.reduce((sum, count) => sum + count, 0);
  chart.replaceChildren();
  for (const [i, count] of counts.entries()) {
    if (!count) continue;
    const bar = document.createElementNS(SVG_NS, "rect");
    const height = Math.max(1, (count / peak) * (CHART_HEIGHT - 4));
    bar.setAttribute("x", String(i * width));
    bar.setAttribute("y", String(CHART_HEIGHT - height));
    bar.setAttribute("width", String(Math.max(width - 0.3, 0.5)));
    bar.setAttribute("height", String(height));
    const tip = document.createElementNS(SVG_NS, "title");
    tip.textContent = `${new Date((start + i) * 1000).toLocaleTimeString()}: ${count}/s`;
    bar.append(tip);
    chart.append(bar);
  }
  chart.dataset.total = String(total);
  $("chart-from").textContent = `${Math.round(counts.length / 60)} min ago`;
  $("chart-summary").textContent = `${total} delivered in ${Math.round(counts.length / 60)} min, peak ${peak}/s`;
}

function renderDead(page) {
  const body = $("dead");
  body.replaceChildren();
  pageSeqs = page.items.map((item) => item.seq);
  nextAfterSeq = page.next_after_seq;
  for (const seq of [...selected]) if (!pageSeqs.includes(seq)) selected.delete(seq);
  for (const item of page.items) {
    const box = Object.assign(document.createElement("input"), { type: "checkbox", checked: selected.has(item.seq) });
    box.setAttribute("aria-label", `select ${item.seq}`);
    box.addEventListener("change", () => {
      if (box.checked) selected.add(item.seq);
      else selected.delete(item.seq);
      updateSelection();
    });
    const requeue = element("button", "Requeue");
    requeue.type = "button";
    requeue.className = "requeue";
    requeue.addEventListener("click", () => requeueSeqs([item.seq]));
    const age = element("span", formatAge((Date.now() - Date.parse(item.created_at)) / 1000));
    age.title = `created ${item.created_at}, dead since ${item.dead_at || "—"}`;
    const tr = row([box, String(item.seq), item.kind, element("code", item.key), element("code", item.interaction_id),
      String(item.attempts), age, element("span", item.last_error || "—", "reason"), requeue]);
    tr.dataset.seq = item.seq;
    tr.dataset.key = item.key;
    body.append(tr);
  }
  if (!page.items.length) body.append(row(["", "no dead letters here", "", "", "", "", "", "", ""]));
  const first = pageStarts.length;
  $("page-info").textContent = `page ${first}, ${page.items.length} shown`;
  $("prev").disabled = pageStarts.length < 2;
  $("next").disabled = nextAfterSeq === null;
  updateSelection();
}

function updateSelection() {
  $("requeue-selected").disabled = selected.size === 0;
  $("requeue-selected").textContent = `Requeue selected (${selected.size})`;
  $("select-all").checked = pageSeqs.length > 0 && pageSeqs.every((seq) => selected.has(seq));
}

function showResult(text, failed = false) {
  const result = $("result");
  result.textContent = text;
  result.classList.toggle("failed", failed);
  result.hidden = false;
}

// --- loading and acting ------------------------------------------------------------------------------------

function signedOut(message) {
  clearTimeout(refreshTimer);
  refreshRun++;
  sessionStorage.removeItem(TOKEN_KEY);
  $("dashboard").hidden = true;
  for (const id of ["backlog", "failures", "dead", "readyz", "chart"]) $(id).replaceChildren();
  selected.clear();
  pageStarts = [0];
  $("login").hidden = false;
  $("auth-error").textContent = message;
  $("auth-error").hidden = !message;
}

async function readyState() {
  const response = await fetch("/readyz", { cache: "no-store" });
  return { http_status: response.status, ...(await response.json().catch(() => ({}))) };
}

async function refresh() {
  clearTimeout(refreshTimer);
  const run = ++refreshRun;
  try {
    const afterSeq = pageStarts[pageStarts.length - 1];
    const [stats, relay, dead, ready] = await Promise.all([
      api("/api/admin/outbox/stats"),
      api("/api/admin/relay"),
      api(`/api/admin/outbox/dead?limit=${PAGE_SIZE}&after_seq=${afterSeq}`),
      readyState(),
    ]);
    if (run !== refreshRun) return;
    $("login").hidden = true;
    $("auth-error").hidden = true;
    $("dashboard").hidden = false;
    $("error").hidden = true;
    renderStats(stats);
    renderRelay(relay, ready);
    renderDead(dead);
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (error) {
    if (run !== refreshRun) return;
    if (error instanceof AuthError) {
      signedOut(error.message);
      return;
    }
    $("error").textContent = error.message;
    $("error").hidden = false;
  }
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, REFRESH_INTERVAL_MS);
}

async function act(question, path, body, describe) {
  if (!window.confirm(question)) return;
  try {
    showResult(describe(await api(path, body)));
  } catch (error) {
    if (error instanceof AuthError) {
      signedOut(error.message);
      return;
    }
    showResult(`failed: ${error.message}`, true);
  }
  await refresh();
}

function requeueSeqs(seqs) {
  const what = seqs.length === 1 ? `dead letter ${seqs[0]}` : `${seqs.length} dead letters (${seqs.join(", ")})`;
  return act(`Requeue ${what}? They will be delivered again, due now.`, "/api/admin/outbox/requeue", { seqs },
    (answer) => {
      for (const seq of answer.requeued) selected.delete(seq);
      return `requeued ${answer.count}: ${answer.requeued.join(", ") || "none (no longer dead)"}`;
    });
}

function purge() {
  const days = Number($("purge-days").value);
  if (!Number.isFinite(days) || days < 0) {
    showResult("failed: the age must be a number of days, 0 or more", true);
    return;
  }
  return act(`Delete for good every dead letter dead for more than ${days} days?`, "/api/admin/outbox/purge-dead",
    { older_than_s: days * DAY_S }, (answer) => `purged ${answer.purged}`);
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  refresh();
});
$("sign-out").addEventListener("click", () => signedOut(""));
$("requeue-selected").addEventListener("click", () => requeueSeqs([...selected].sort((a, b) => a - b)));
$("purge").addEventListener("click", purge);
$("select-all").addEventListener("change", () => {
  for (const seq of pageSeqs) {
    if ($("select-all").checked) selected.add(seq);
    else selected.delete(seq);
  }
  for (const box of $("dead").querySelectorAll("input[type=checkbox]")) box.checked = $("select-all").checked;
  updateSelection();
});
$("next").addEventListener("click", () => {
  if (nextAfterSeq === null) return;
  pageStarts.push(nextAfterSeq);
  refresh();
});
$("prev").addEventListener("click", () => {
  if (pageStarts.length > 1) pageStarts.pop();
  refresh();
});

if (token()) refresh();
else signedOut("");
