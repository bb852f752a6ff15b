"""A zombie worker: paused (SIGSTOP) mid-stream until the group gave its partitions to another
worker on the same state root, then resumed (SIGCONT). It must never write them again: a zombie
that resumes inside a batch stops (exit 70, fenced) and the files stay byte-exact."""

from __future__ import annotations

import os
import signal
import time

import pytest

from streams.ops.sample import bus_events

from .support import Job, wait_until
from .test_scale_out import _assigned, _total

pytestmark = pytest.mark.integration

ZOMBIES = 3


def test_a_paused_worker_resumed_after_its_partitions_moved_writes_nothing(job: Job) -> None:
    lines = list(bus_events(120_000, sessions=24, seed=77))
    expected = job.expected(lines)
    topic = job.settings.output_topic
    everything = set(range(job.settings.partitions))
    owner = None
    fenced = 0
    for n in range(ZOMBIES):
        chunk = lines[n * 30_000 : (n + 1) * 30_000]
        zombie = job.worker() if owner is None else owner
        wait_until(lambda z=zombie: _assigned(z, topic) == everything, 60, "one owner of all")
        job.produce(chunk)
        before = _total(job, expected)
        wait_until(lambda b=before: _total(job, expected) > b, 60, "the owner to write")
        os.kill(zombie.pid, signal.SIGSTOP)  # in the middle of its backlog
        try:
            owner = job.worker()
            wait_until(lambda o=owner: _assigned(o, topic) == everything, 60, "the takeover")
            # The new owner writes, unless the paused worker holds one of its sessions' locks
            # (paused mid-write): then its recovery waits for that lock, until the resume.
            moved = _total(job, expected)
            deadline = time.monotonic() + 15
            while _total(job, expected) <= moved and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            os.kill(zombie.pid, signal.SIGCONT)
        # The zombie finishes what it had in hand, or learns of the rebalance first.
        deadline = time.monotonic() + 20
        while zombie.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
            if "was assigned to another worker" in zombie.log():
                break
        if "was assigned to another worker" in zombie.log():
            fenced += 1
            wait_until(lambda z=zombie: not z.alive(), 30, "the fenced worker to stop")
            assert zombie.returncode == 70, zombie.log()[-3000:]
        zombie.terminate()
    job.produce(lines[ZOMBIES * 30_000 :])
    assert job.wait_for_files(expected, timeout=180) == expected, job.logs()
    print(f"fencing: {fenced} of {ZOMBIES} resumed workers were fenced mid-batch")
    # Paused in the middle of a backlog, a worker resumes inside a batch and goes on writing
    # before its consumer hears of the rebalance: without fencing it wrote the new owner's
    # sessions (0 of 3 fenced before the fence; the files survived only by the new owner's
    # comparison of foreign bytes with its replay).
    assert fenced >= 1
