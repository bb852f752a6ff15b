"""Log hygiene for a worker whose broker is gone: repeats collapsed, first occurrence whole.

With the broker down aiokafka logs the same few lines tens of times a second. The filter lets
the first occurrence of each (logger, message template) through whole, then holds repeats
back and, once per window, logs one line saying how many were suppressed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

__all__ = ["COLLAPSED_LOGGERS", "RepeatCollapser", "collapse_repeats"]

#: The loggers that repeat themselves while a broker is unreachable.
COLLAPSED_LOGGERS: Final = ("aiokafka", "faust.transport")


class RepeatCollapser(logging.Filter):
    """Passes the first record of each (logger, template) per ``window_s``; counts the rest."""

    def __init__(self, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_s = window_s
        self.clock = clock
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}  # -> (window start, held)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not record.name.startswith(COLLAPSED_LOGGERS):
            return True
        key = (record.name, str(record.msg))
        now = self.clock()
        started, held = self._seen.get(key, (None, 0))
        if started is None or now - started >= self.window_s:
            self._seen[key] = (now, 0)
            if held:
                record.msg = f"{record.msg} [repeated {held} more times in {self.window_s:.0f}s]"
            return True
        self._seen[key] = (started, held + 1)
        return False


def collapse_repeats(window_s: float = 10.0) -> RepeatCollapser:
    """Installs one collapser on every logger of the noisy libraries (idempotent).

    On each logger by name, not on a parent: a logger's filters do not see records that its
    children (``aiokafka.conn``, ``aiokafka.consumer.group_coordinator``...) propagate.
    """
    loggers = [
        logging.getLogger(name)
        for name in [*COLLAPSED_LOGGERS, *logging.root.manager.loggerDict]
        if name.startswith(COLLAPSED_LOGGERS)
    ]
    found = [f for lg in loggers for f in lg.filters if isinstance(f, RepeatCollapser)]
    collapser = found[0] if found else RepeatCollapser(window_s)
    for logger in loggers:
        if collapser not in logger.filters:
            logger.addFilter(collapser)
    return collapser
