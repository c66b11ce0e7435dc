"""The operator files in ops/: the Grafana dashboard imports as is and queries only metrics (and labels) that
a live /metrics scrape has; the alert rules pass `promtool check rules` and their `promtool test rules`."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from outbox.relay import PARENT_PENDING
from outbox.target import PARENT_MISSING
from service.target.delivery import ECO_TARGET
from tests.conftest import TEST_RELAY
from tests.helpers import OUTBOX_ROWS, read_sse, scalar, wait_for
from tests.service_process import ServiceProcess
from tests.test_admin import TOKEN, dead_signal

OPS_DIR = Path(__file__).resolve().parent.parent / "ops"
DASHBOARD = OPS_DIR / "grafana" / "eco-outbox.json"
ALERTS = OPS_DIR / "prometheus" / "alerts.yml"
ALERT_TESTS = OPS_DIR / "prometheus" / "alerts_test.yml"
# Installed by the Makefile's test prerequisites (Debian package prometheus), like chromium.
PROMTOOL = Path("/usr/bin/promtool")
PROMTOOL_TIMEOUT_S = 60

METRIC = re.compile(r"\b(eco_[a-z0-9_]+)\s*(?:\{([^}]*)\})?")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel.get("targets", [])]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert os.access(PROMTOOL, os.X_OK), "run the tests with `make test`: it installs Debian's prometheus"
    return subprocess.run(
        [str(PROMTOOL), *args], capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT_S, check=False
    )


def test_dashboard_imports_as_is() -> None:
    """What Grafana's import needs without a prompt: uid, title, panels placed, one templated datasource."""
    board = dashboard()
    assert board["uid"] == "eco-outbox" and board["title"] and isinstance(board["schemaVersion"], int)
    [variable] = board["templating"]["list"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    titles = set()
    for panel in board["panels"]:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        titles.add(panel["title"])
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(refs) == len(set(refs)) and all(target["expr"] for target in panel["targets"])
    assert {
        "Intake rate",
        "Intake latency",
        "Backlog",
        "Oldest pending age",
        "Delivered",
        "Retried by reason",
        "Dead-lettered by reason",
        "Relay batch size",
        "Relay batch duration",
        "Open SSE streams",
    } <= titles


def referenced(expr: str) -> tuple[dict[str, set[str]], set[str]]:
    """The metrics of a PromQL expression with the labels their selectors match, and its grouping labels."""
    metrics: dict[str, set[str]] = defaultdict(set)
    for name, matchers in METRIC.findall(expr):
        metrics[name] |= set(MATCHER.findall(matchers))
    grouping = {label.strip() for labels in GROUPING.findall(expr) for label in labels.split(",")}
    return metrics, grouping - {""}


def test_the_expression_reader_sees_metrics_and_labels() -> None:
    metrics, grouping = referenced(
        'sum by (le, route) (rate(eco_a_bucket{route=~"/x|/y",status!="5.."}[5m])) / sum(eco_b)'
    )
    assert metrics == {"eco_a_bucket": {"route", "status"}, "eco_b": set()}
    assert grouping == {"le", "route"}


async def test_every_queried_metric_exists_in_a_live_scrape(make_client, db) -> None:
    client = await make_client(admin_token=TOKEN, relay=replace(TEST_RELAY, max_attempts=2))
    # Traffic that gives every labelled series a sample: a streamed ask, a delivered signal, a retried and
    # dead-lettered one.
    resp = await client.post("/api/ask-eco", json={"message": "Olá"}, headers={"Accept": "text/event-stream"})
    await read_sse(resp)
    iid = resp.headers["X-Eco-Interaction-Id"]
    signal = await client.post("/api/signal", json={"interaction_id": iid, "name": "view"})
    key = (await signal.json())["id"]
    await wait_for(
        lambda: scalar(db, f"select state from {OUTBOX_ROWS} where key = %s", (key,)),
        lambda state: state == "delivered",
    )
    await dead_signal(client, db)
    scrape = await client.get("/metrics")
    assert scrape.status == 200

    labels_of: dict[str, set[str]] = defaultdict(set)
    for family in text_string_to_metric_families(await scrape.text()):
        for sample in family.samples:
            labels_of[sample.name] |= set(sample.labels)

    exprs = dashboard_exprs() + [rule["expr"] for rule in alert_rules()]
    assert len(exprs) > 20
    for expr in exprs:
        metrics, grouping = referenced(expr)
        assert metrics, f"no eco_ metric in {expr!r}"
        for name, labels in metrics.items():
            assert name in labels_of, f"{name} (in {expr!r}) is not in the scrape"
            assert labels <= labels_of[name], f"{name} has no label {labels - labels_of[name]} ({expr!r})"
        present = set().union(*(labels_of[name] for name in metrics))
        assert grouping <= present, f"grouping by {grouping - present} in {expr!r}"


def scraped_series(text: str) -> dict[str, list[dict[str, str]]]:
    """Sample name -> the label sets it has in a scrape."""
    series: dict[str, list[dict[str, str]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series[sample.name].append(dict(sample.labels))
    return series


async def test_a_fresh_service_exports_every_queried_series_at_zero(database_url, tmp_path) -> None:
    """The first scrape of a process that has served nothing: every metric the dashboard and the alerts name
    is there with the labels they match, and the relay's counters have a zero series for each of the
    target's kinds (never a hand list: a kind the target gains is covered)."""
    async with ServiceProcess({"DATABASE_URL": database_url}, tmp_path / "service.log") as service:
        async with aiohttp.ClientSession() as session, session.get(f"{service.url}/metrics") as resp:
            assert resp.status == 200
            series = scraped_series(await resp.text())

    for expr in dashboard_exprs() + [rule["expr"] for rule in alert_rules()]:
        metrics, grouping = referenced(expr)
        for name, labels in metrics.items():
            assert name in series, f"{name} (in {expr!r}) is not in a fresh scrape"
            present = set().union(*series[name])
            assert labels | (grouping - {"le"}) <= present, f"{name} lacks {labels - present} ({expr!r})"

    def values(name: str, label: str) -> set[str]:
        return {labels[label] for labels in series[name] if label in labels}

    assert values("eco_outbox_delivered_total", "kind") == set(ECO_TARGET.order)
    for name in ("eco_outbox_retried_total", "eco_outbox_dead_lettered_total"):
        pairs = {(labels["kind"], labels["reason"]) for labels in series[name]}
        assert {
            (kind, reason) for kind in ECO_TARGET.child_kinds for reason in (PARENT_MISSING, PARENT_PENDING)
        } <= pairs
    assert values("eco_outbox_rows", "kind") == set(ECO_TARGET.order)
    routes = values("eco_http_request_seconds_count", "route")
    assert {"/api/ask-eco", "/api/signal"} <= routes
    assert {"500", "503"} <= values("eco_http_request_seconds_count", "status")


def test_alert_rules_cover_the_four_conditions() -> None:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    assert set(rules) == {
        "EcoOutboxBacklogStale",
        "EcoOutboxDeadLetters",
        "EcoOutboxRelayNotReady",
        "EcoOutboxIntake5xx",
    }
    assert "eco_outbox_oldest_pending_age_seconds" in rules["EcoOutboxBacklogStale"]["expr"]
    assert "eco_outbox_dead_lettered_total" in rules["EcoOutboxDeadLetters"]["expr"]
    assert "eco_outbox_relay_running" in rules["EcoOutboxRelayNotReady"]["expr"]
    assert 'status=~"5.."' in rules["EcoOutboxIntake5xx"]["expr"]
    for rule in rules.values():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]


def test_alert_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout


def test_alert_rules_fire_as_their_unit_tests_expect() -> None:
    """alerts_test.yml: each alert stays quiet while healthy and fires on its condition, with its labels."""
    result = promtool("test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    """The check can fail: the same file with one expression broken does not pass."""
    broken = tmp_path / "alerts.yml"
    broken.write_text(ALERTS.read_text().replace("> 300", "> > 300", 1))
    result = promtool("check", "rules", str(broken))
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr
