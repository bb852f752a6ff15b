"""Pure: an escalation entry -> the exact line serde_json writes for the seed's struct.

Keys in the order ``ts, kind, goal_id, intent, summary, confidence, auto_proceed``; no
spaces; ``null`` for absent options; UTF-8 as is; ``"``, ``\\`` and U+0000..U+001F escaped
as serde_json does (``\\b \\f \\n \\r \\t``, else ``\\u00XX`` in lower-case hex, exactly the
set and spelling of Python's ``json`` encoder); ``ts`` as chrono's RFC 3339 with ``Z`` and
0, 3, 6 or 9 fraction digits; one ``\\n`` after the line.
"""

from __future__ import annotations

import time
from json.encoder import encode_basestring
from typing import Final

from streams.core.mapping import EscalationEntry

__all__ = ["ENTRY_KEYS", "TS_MAX_US", "TS_MIN_US", "render", "rfc3339", "ts_in_range"]

#: The keys of a line, in the order the seed's struct declares them (and serde_json writes them).
ENTRY_KEYS: Final = ("ts", "kind", "goal_id", "intent", "summary", "confidence", "auto_proceed")

#: The instants chrono and this module render as a four-digit year (0001..9999), in µs.
TS_MIN_US: Final = -62135596800 * 1_000_000
TS_MAX_US: Final = 253402300799 * 1_000_000 + 999_999


def rfc3339(seconds: int, nanos: int = 0) -> str:
    """chrono's ``to_rfc3339_opts(SecondsFormat::AutoSi, true)`` for a UTC instant."""
    t = time.gmtime(seconds)
    base = (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
        f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    )
    if nanos == 0:
        return base + "Z"
    if nanos % 1_000_000 == 0:
        return f"{base}.{nanos // 1_000_000:03d}Z"
    if nanos % 1_000 == 0:
        return f"{base}.{nanos // 1_000:06d}Z"
    return f"{base}.{nanos:09d}Z"


def ts_in_range(ts_us: int) -> bool:
    return TS_MIN_US <= ts_us <= TS_MAX_US


def render(entry: EscalationEntry, /) -> bytes:
    """The entry as one JSONL line, byte-compatible with the seed's serde_json output."""
    seconds, micros = divmod(entry.ts_us, 1_000_000)
    goal = "null" if entry.goal_id is None else encode_basestring(entry.goal_id)
    intent = "null" if entry.intent is None else encode_basestring(entry.intent)
    if entry.confidence is not None:
        raise ValueError("confidence is always null in the seed's entries")
    line = (
        f'{{"ts":"{rfc3339(seconds, micros * 1000)}","kind":"{entry.kind}",'
        f'"goal_id":{goal},"intent":{intent},"summary":{encode_basestring(entry.summary)},'
        f'"confidence":null,"auto_proceed":{"true" if entry.auto_proceed else "false"}}}\n'
    )
    return line.encode("utf-8")
