"""``escalations sink verify`` and ``escalations sink rebuild``: check and restore the files."""

from __future__ import annotations

import json
import logging

from streams.errors import SinkCorruptionError
from streams.sink.files import FILE_NAME, FileSink
from streams.sink.position import POSITION_NAME, parse_position

log = logging.getLogger(__name__)

KEYS = ["ts", "kind", "goal_id", "intent", "summary", "confidence", "auto_proceed"]


def verify_session(sink: FileSink, session_id: str) -> list[str]:
    """What is wrong with one state directory (empty: its file matches its position)."""
    directory = sink.directory(session_id)
    data, pos_path = directory / FILE_NAME, directory / POSITION_NAME
    if not pos_path.exists():
        return [f"{pos_path}: missing"] if data.exists() else []
    try:
        position = parse_position(pos_path.read_bytes(), pos_path)
    except SinkCorruptionError as exc:
        return [str(exc)]
    content = data.read_bytes() if data.exists() else b""
    problems = []
    if len(content) < position.size:
        problems.append(
            f"{data}: {len(content)} bytes but {position.size} recorded (data lost: rebuild it)"
        )
        return problems
    if len(content) > position.size:
        problems.append(
            f"{data}: torn or unrecorded tail of {len(content) - position.size} bytes past the "
            "recorded position (the worker truncates it when it next owns the session)"
        )
    good = content[: position.size]
    if good and not good.endswith(b"\n"):
        problems.append(f"{data}: the recorded bytes do not end with a newline")
    lines = good.split(b"\n")[:-1] if good else []
    if len(lines) != position.entries:
        problems.append(f"{data}: {len(lines)} lines but {position.entries} recorded")
    for number, line in enumerate(lines, 1):
        try:
            obj = json.loads(line)
        except ValueError:
            problems.append(f"{data}: line {number} is not JSON")
            continue
        if not isinstance(obj, dict) or list(obj) != KEYS:
            problems.append(f"{data}: line {number} does not have the entry's keys in order")
    return problems
