"""The Prometheus rules (deploy/prometheus) and the Grafana dashboard (deploy/grafana) are sound.

``promtool check rules`` parses every rule, ``promtool test rules`` runs the unit tests in
alerts_test.yml (series in, alerts out), and every dashboard query is parsed by promtool too
(as a recording rule in a scratch file). That the metric names exist is checked against a
running worker in tests/integration/test_deploy_metrics.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # PyYAML, in the dev extra

from tests.support.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "escalations.json"
RUNBOOK = "https://github.com/escalation-stream/escalation-stream/blob/main/README.md#"


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool", "prometheus")


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    assert [g["name"] for g in groups] == ["escalation-stream"]
    return list(groups[0]["rules"])


def dashboard_queries() -> list[str]:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = []
    for panel in data["panels"]:
        for child in [panel, *panel.get("panels", [])]:
            queries += [t["expr"] for t in child.get("targets", []) if t.get("expr")]
    for variable in data["templating"]["list"]:
        query = variable.get("query")
        if variable.get("type") == "query":
            queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def test_promtool_checks_the_rules(promtool: str) -> None:
    result = run(promtool, "check", "rules", str(RULES), cwd=RULES.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass(promtool: str) -> None:
    result = run(promtool, "test", "rules", RULES_TEST.name, cwd=RULES_TEST.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_unit_tests_cover_the_key_alerts() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))
    assert tests["rule_files"] == [RULES.name]
    firing = {
        case["alertname"]
        for group in tests["tests"]
        for case in group["alert_rule_test"]
        if case.get("exp_alerts")
    }
    covered = {"EscalationsWorkerStalled", "EscalationsDeadLetters", "EscalationsCorruptSessions"}
    assert covered <= firing, sorted(covered - firing)
    assert firing == {r["alert"] for r in alert_rules()}, "every alert is seen firing once"


def test_every_alert_is_complete() -> None:
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert {"alert", "expr", "for", "labels", "annotations"} <= set(rule), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        annotations = rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(annotations), rule["alert"]
        assert annotations["runbook_url"].startswith(RUNBOOK), rule["alert"]


def test_the_alerts_watch_what_the_brief_names() -> None:
    exprs = {r["alert"]: " ".join(r["expr"].split()) for r in alert_rules()}
    assert exprs["EscalationsWorkerStalled"] == "escalations_healthy == 0"
    assert exprs["EscalationsWorkerNotReady"] == "escalations_ready == 0"
    dead = exprs["EscalationsDeadLetters"]
    assert "increase(escalations_dead_letters_total[10m]) > 0" in dead
    # A series born with its first dead letters counts too (increase() misses that step).
    assert "unless escalations_dead_letters_total offset 10m" in dead
    assert exprs["EscalationsCorruptSessions"] == "escalations_corrupt_sessions > 0"
    assert "deriv(sum by (topic) (escalations_consumer_lag)" in exprs["EscalationsLagGrowing"]
    # Input with no lines is normal when events are filtered: compare entries with lines.
    assert "escalations_entries_out_total" in exprs["EscalationsNoProgress"]
    assert "escalations_events_in_total" not in exprs["EscalationsNoProgress"]
    assert exprs["EscalationsWorkerDown"] == 'up{job="escalation-stream"} == 0'
    assert exprs["EscalationsWorkerAbsent"].startswith("absent(")


def test_promtool_parses_every_dashboard_query(promtool: str, tmp_path: Path) -> None:
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert data["schemaVersion"] >= 36
    datasource = [v for v in data["templating"]["list"] if v["name"] == "datasource"]
    assert datasource and datasource[0]["type"] == "datasource"
    assert datasource[0]["query"] == "prometheus"
    for panel in data["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    queries = dashboard_queries()
    assert len(queries) >= 10
    # Grafana's variables, as Grafana would substitute them.
    concrete = [
        q.replace("$__rate_interval", "5m").replace("$instance", ".*")
        for q in queries
        if not q.startswith("label_values(")
    ]
    assert not [q for q in concrete if "$" in q], "an unknown Grafana variable"
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": q} for i, q in enumerate(concrete)
                ],
            }
        ]
    }
    scratch = tmp_path / "dashboard_rules.yml"
    scratch.write_text(yaml.safe_dump(rules), encoding="utf-8")
    result = run(promtool, "check", "rules", str(scratch), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_has_the_panels_an_operator_needs() -> None:
    joined = "\n".join(dashboard_queries())
    for needed in (
        r"rate\(escalations_events_in_total",
        r"rate\(escalations_entries_out_total",
        r"rate\(escalations_lines_written_total",
        r"sum by \(reason\) \(rate\(escalations_events_dropped_total",
        r"sum by \(error\) \(rate\(escalations_dead_letters_total",
        r"sum by \(topic, partition\) \(escalations_consumer_lag",
        r"histogram_quantile\(0\.5, sum by \(le\) \(rate\(escalations_durable_append_seconds_bucket",
        r"histogram_quantile\(0\.99, sum by \(le\) \(rate\(escalations_durable_append_seconds_bucket",
        r"escalations_batch_records_bucket",
        r"escalations_ready",
        r"escalations_healthy",
        r"escalations_corrupt_sessions",
    ):
        assert re.search(needed, joined), needed
