"""A session's reader may empty, cut, replace or remove its file (issue 20): the worker goes on
writing the session's new lines after what is there, counts the discontinuity and logs it.
The real worker on the embedded broker, a reader acting on the files after a restart."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from streams.ops.broker import free_port
from streams.ops.sample import bus_events
from streams.sink.files import FILE_NAME

from .support import Job, fetch, wait_until

pytestmark = pytest.mark.integration


def _answers(url: str) -> bool:
    try:
        return fetch(url)[0] == 200
    except OSError:
        return False


def test_a_reader_empties_cuts_replaces_and_removes_files_and_new_lines_still_come(
    job: Job,
) -> None:
    port = free_port()
    job.env.update(ESCALATIONS_WEB_ENABLED="true", ESCALATIONS_WEB_PORT=str(port))
    lines = list(bus_events(1600, sessions=8, seed=20))
    first, rest = lines[:1200], lines[1200:]
    before = job.expected(first)
    worker = job.worker()
    job.produce(first)
    assert job.wait_for_files(before) == before, job.logs()
    worker.terminate()
    worker.start()
    wait_until(lambda: _answers(f"http://127.0.0.1:{port}/readyz"), 60, "the worker ready again")

    later = job.expected(rest)
    emptied, cut, replaced, removed, *_ = sorted(before)
    assert set(later) >= {emptied, cut, replaced, removed}, "each acted-on session gets lines"
    (job.root / emptied / FILE_NAME).write_bytes(b"")
    kept = before[cut][: before[cut].rindex(b"\n", 0, len(before[cut]) - 1) + 1]
    (job.root / cut / FILE_NAME).write_bytes(kept + b'{"half a li')
    tmp = job.root / replaced / "reader.tmp"
    tmp.write_bytes(b'{"the reader kept": 1}\n')
    os.replace(tmp, job.root / replaced / FILE_NAME)
    shutil.rmtree(job.root / removed)
    job.produce(rest)

    expected = {s: before.get(s, b"") + later.get(s, b"") for s in set(before) | set(later)}
    expected[emptied] = later[emptied]
    expected[cut] = kept + later[cut]
    expected[replaced] = b'{"the reader kept": 1}\n' + later[replaced]
    expected[removed] = later[removed]
    assert job.wait_for_files(expected, timeout=60) == expected, job.logs()
    log = worker.log()
    for what in ("emptied outside", "truncated outside", "replaced outside", "was removed"):
        assert what in log, what
    metrics = fetch(f"http://127.0.0.1:{port}/metrics")[1].decode()
    for kind in ("emptied", "truncated", "replaced", "removed"):
        assert f'escalations_sink_discontinuities_total{{kind="{kind}"}} 1.0' in metrics, metrics
    assert "escalations_corrupt_sessions 0.0" in metrics
    time.sleep(0.5)
    assert "skipping session" not in worker.log()
