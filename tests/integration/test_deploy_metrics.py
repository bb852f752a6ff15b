"""Every metric the alerts and the dashboard query is one a running worker exports.

A real worker (``python -m streams.cli worker``) is started on the test broker with its web
server on a free port; once ``/readyz`` answers 200, ``/metrics`` is scraped and the metric
names in deploy/prometheus/alerts.yml (and its unit tests), and in
deploy/grafana/escalations.json, are looked up in it. The names come from the scrape, not from
the code, so the check holds however the package is laid out.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml  # PyYAML, in the dev extra

from .support import fetch

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "escalations.json"

#: A metric name of the job, as PromQL writes it: followed by a selector, a range, the end of
#: a call, an argument separator, white space or the end of the query.
_METRIC = re.compile(r"(?<![A-Za-z0-9_:])(escalations_[A-Za-z0-9_:]*)(?=[\s{\[),]|$)")
_TYPE = re.compile(r"^# TYPE (\S+) (\S+)$")
_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{.*\})? \S+")
_HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _names_in(query: str) -> set[str]:
    return set(_METRIC.findall(query))


def queried_names() -> dict[str, set[str]]:
    """Metric name -> where it is queried."""
    where: dict[str, set[str]] = {}

    def add(query: str, place: str) -> None:
        for name in _names_in(query):
            where.setdefault(name, set()).add(place)

    for group in yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]:
        for rule in group["rules"]:
            add(rule["expr"], f"alerts.yml {rule.get('alert') or rule.get('record')}")
    for group in yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))["tests"]:
        for series in group.get("input_series", []):
            add(series["series"], "alerts_test.yml input_series")
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for panel in dashboard["panels"]:
        for child in [panel, *panel.get("panels", [])]:
            for target in child.get("targets", []):
                add(target.get("expr", ""), f"escalations.json panel {child['title']!r}")
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if variable.get("type") == "query":
            add(query["query"] if isinstance(query, dict) else query, "escalations.json variable")
    return where


def families(exposition: str) -> dict[str, str]:
    """The metric families of a scrape (their ``# TYPE`` lines) -> their type."""
    return dict(m.groups() for m in map(_TYPE.match, exposition.splitlines()) if m)


def exported_names(exposition: str) -> dict[str, str]:
    """Every series name a scrape can hold -> its family's type.

    Families with no sample yet (a labelled counter before its first increment, the lag before
    the first fetch) still have their ``# TYPE`` line, so they count as exported.
    """
    names: dict[str, str] = {}
    for line in exposition.splitlines():
        typed = _TYPE.match(line)
        if typed:
            family, kind = typed.groups()
            names[family] = kind
            if kind == "counter" and not family.endswith("_total"):
                names[f"{family}_total"] = kind
            if kind in ("histogram", "summary"):
                for suffix in _HISTOGRAM_SERIES:
                    names[family + suffix] = kind
            continue
        sample = _SAMPLE.match(line)
        if sample and not line.startswith("#"):
            names.setdefault(sample.group(1), "sample")
    return names


def test_every_queried_metric_is_exported_by_a_running_worker(
    bootstrap: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    port = _free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "ESCALATIONS_STATE_ROOT": str(tmp_path / "state"),
        "ESCALATIONS_DATA_DIR": str(tmp_path / "faust"),
        "ESCALATIONS_INPUT_TOPIC": f"bus-events-{tag}",
        "ESCALATIONS_OUTPUT_TOPIC": f"escalations-{tag}",
        "ESCALATIONS_DLQ_TOPIC": f"bus-events-{tag}.dlq",
        "ESCALATIONS_APP_ID": f"escalation-stream-{tag}",
        "ESCALATIONS_WEB_ENABLED": "true",
        "ESCALATIONS_WEB_PORT": str(port),
        "ESCALATIONS_WEB_BIND": "127.0.0.1",
        "ESCALATIONS_WEB_HOST": "127.0.0.1",
        "ESCALATIONS_SESSION_TIMEOUT": "3",
        "PYTHONUNBUFFERED": "1",
    }
    log_path = tmp_path / "worker.log"
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def worker_log() -> str:
        return log_path.read_text(errors="replace")[-6000:]

    try:
        deadline = time.monotonic() + 120
        status: int | None = None
        while time.monotonic() < deadline:
            assert process.poll() is None, (
                f"the worker exited ({process.returncode}):\n{worker_log()}"
            )
            try:
                status, _ = fetch(f"{base}/readyz")
            except OSError:
                status = None
            if status == 200:
                break
            time.sleep(0.25)
        assert status == 200, f"/readyz never answered 200 (last: {status}):\n{worker_log()}"

        status, body = fetch(f"{base}/metrics")
        assert status == 200
        exported = exported_names(body.decode())
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=10)

    queried = queried_names()
    assert len(queried) >= 10, sorted(queried)
    missing = {}
    for name, places in sorted(queried.items()):
        if name in exported:
            continue
        base_name = next((name.removesuffix(s) for s in _HISTOGRAM_SERIES if name.endswith(s)), "")
        if exported.get(base_name) == "histogram":
            continue
        missing[name] = sorted(places)
    ours = sorted(n for n in exported if n.startswith("escalations_"))
    assert not missing, f"queried but not exported: {missing}\nexported: {ours}"
    # And the other way round: the dashboard shows every family the worker exports.
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    shown = {
        n
        for panel in dashboard["panels"]
        for t in panel.get("targets", [])
        for n in _names_in(t.get("expr", ""))
    }
    not_shown = sorted(
        family
        for family, kind in families(body.decode()).items()
        if family.startswith("escalations_")
        and not family.endswith("_created")  # prometheus_client's creation timestamps
        and not ({family} | {family + s for s in _HISTOGRAM_SERIES}) & shown
    )
    assert not not_shown, f"exported but on no dashboard panel: {not_shown}"
