"""Log hygiene: repeated library warnings collapse into one line per window with a count."""

from __future__ import annotations

import logging

import pytest

from streams.runtime.logs import RepeatCollapser, collapse_repeats


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(name: str, msg: str, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, ("127.0.0.1:9092",), None)


def test_the_first_occurrence_passes_whole_and_repeats_are_counted() -> None:
    clock = _Clock()
    collapser = RepeatCollapser(window_s=10.0, clock=clock)
    first = _record("aiokafka.conn", "Unable to connect to %s")
    assert collapser.filter(first)
    assert first.getMessage() == "Unable to connect to 127.0.0.1:9092"
    for _ in range(74):
        clock.now += 0.1
        assert not collapser.filter(_record("aiokafka.conn", "Unable to connect to %s"))
    clock.now = 10.0
    summary = _record("aiokafka.conn", "Unable to connect to %s")
    assert collapser.filter(summary)
    assert summary.getMessage() == (
        "Unable to connect to 127.0.0.1:9092 [repeated 74 more times in 10s]"
    )


def test_other_messages_loggers_and_levels_are_untouched() -> None:
    collapser = RepeatCollapser(clock=_Clock())
    assert collapser.filter(_record("aiokafka.conn", "one"))
    assert collapser.filter(_record("aiokafka.conn", "two"))  # another template
    assert collapser.filter(_record("aiokafka.client", "one"))  # another logger
    assert collapser.filter(_record("streams.runtime.source", "one"))
    assert collapser.filter(_record("streams.runtime.source", "one"))  # ours: never collapsed
    assert collapser.filter(_record("aiokafka.conn", "one", logging.INFO))  # below WARNING


def test_collapse_repeats_reaches_the_child_loggers_that_actually_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import aiokafka  # noqa: F401  # its loggers exist once it is imported

    collapser = collapse_repeats()
    assert collapse_repeats() is collapser  # idempotent
    child = logging.getLogger("aiokafka.conn")
    assert collapser in child.filters
    with caplog.at_level(logging.WARNING, logger="aiokafka.conn"):
        for _ in range(20):
            child.warning("Unable connect to node with id %s: %s", 1, "refused")
    assert len([r for r in caplog.records if r.name == "aiokafka.conn"]) == 1
