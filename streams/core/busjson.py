"""Pure: bus events in the JSON form (serde's default, externally tagged) -> Avro datums.

One object per line::

    {"session_id":"s-42","event_id":"e-1","occurred_at":"2026-11-24T21:40:44.474123Z",
     "event":{"RouterEscalating":{"intent":"Small","target_mode":"WireWorker","preflight":true}}}

Struct variants are objects, unit variants bare strings (``"Cancelled"``), newtype variants
carry their inner value (``{"DisclosureLine":"text"}``). The conversion is driven by the
Avro contract itself, so the JSON form and the topic can never disagree. The result is the
datum fastavro writes and reads back (``return_record_name=True``): unions of records are
``(full name, fields)`` pairs and ``occurred_at`` is integer microseconds since the epoch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

from streams.core.jsonl import ts_in_range
from streams.errors import InputLineError

__all__ = ["U32_MAX", "BusJson", "Convert", "parse_timestamp"]

U32_MAX: Final = 2**32 - 1
#: RFC 3339's DIGIT is ASCII only; re.ASCII keeps \d from matching e.g. full-width digits.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)
_MONTH_DAYS: Final = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
#: Newtype variants whose inner value is not a struct: the JSON carries it bare.
_NEWTYPE_SCALARS: Final = {"PreflightResponse": "action", "DisclosureLine": "line"}


class _Invalid(Exception):
    """A field path and a reason; becomes an InputLineError with the line number."""


Convert = Callable[[Any, str], Any]


def parse_timestamp(text: Any, path: str = "occurred_at") -> int:
    """RFC 3339 -> microseconds since the epoch, UTC; refuses sub-microsecond precision."""
    if not isinstance(text, str):
        raise _Invalid(f"{path}: expected an RFC 3339 string, got {type(text).__name__}")
    m = _RFC3339.fullmatch(text)
    if not m:
        raise _Invalid(f"{path}: {text!r} is not RFC 3339 (e.g. 2026-11-24T21:40:44.474123Z)")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction, zone = m.group(7) or "", m.group(8)
    if not (1 <= month <= 12 and 1 <= day <= _days_in_month(year, month)):
        raise _Invalid(f"{path}: {text!r} is not a calendar date")
    if hour > 23 or minute > 59 or second > 59:
        raise _Invalid(f"{path}: {text!r} is not a valid time of day")
    nanos = int(fraction.ljust(9, "0")) if fraction else 0
    if nanos % 1000:
        raise _Invalid(f"{path}: {text!r} has sub-microsecond digits; the contract is microseconds")
    offset = 0
    if zone not in ("Z", "z"):
        offset_hours, offset_minutes = int(zone[1:3]), int(zone[4:6])
        if offset_hours > 23 or offset_minutes > 59:
            raise _Invalid(f"{path}: {text!r} has a UTC offset outside -23:59..+23:59")
        offset = (1 if zone[0] == "+" else -1) * (offset_hours * 3600 + offset_minutes * 60)
    # Plain arithmetic, not calendar.timegm: year 0000 is valid RFC 3339 syntax (and with a
    # negative offset can even be a UTC instant in range), but datetime refuses it.
    days = _days_from_civil(year, month, day)
    seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset
    micros = seconds * 1_000_000 + nanos // 1000
    if not ts_in_range(micros):
        raise _Invalid(f"{path}: {text!r} is outside years 0001..9999")
    return micros


def _days_in_month(year: int, month: int) -> int:
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return 29 if month == 2 and leap else _MONTH_DAYS[month - 1]


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date, any year (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month - 3 if month > 2 else month + 9) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


def _utf8(line: bytes, line_no: int) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputLineError(
            line_no,
            f"not UTF-8: byte 0x{line[exc.start]:02x} at column {exc.start + 1} ({exc.reason})",
        ) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (RFC 8259)")


class BusJson:
    """Converts JSON-form bus events to datums of the envelope schema it is built from."""

    def __init__(self, envelope_schema: dict[str, Any]) -> None:
        self._named: dict[str, Any] = {}
        self._variants: dict[str, tuple[str, Convert]] = {}
        fields = {f["name"]: f["type"] for f in envelope_schema["fields"]}
        self._event = self._tagged_union(fields["event"], "escalations.bus")

    def parse(self, text: str | bytes, line_no: int = 1) -> dict[str, Any]:
        """One JSON-form line -> the envelope datum; InputLineError names the line and field."""
        try:
            obj = json.loads(text, parse_constant=_refuse_constant)
        except ValueError as exc:
            raise InputLineError(line_no, f"not JSON: {exc}") from exc
        except RecursionError as exc:  # serde_json stops at depth 128; json at the stack's limit
            raise InputLineError(line_no, "not JSON: nested too deeply") from exc
        try:
            if not isinstance(obj, dict):
                raise _Invalid(f"expected a JSON object, got {type(obj).__name__}")
            return {
                "session_id": _string(_required(obj, "session_id", ""), "session_id"),
                "event_id": _string(_required(obj, "event_id", ""), "event_id"),
                "occurred_at": parse_timestamp(_required(obj, "occurred_at", "")),
                "event": self._event(_required(obj, "event", ""), "event"),
            }
        except _Invalid as exc:
            raise InputLineError(line_no, str(exc)) from None

    def parse_lines(self, lines: Iterable[str | bytes]) -> Iterator[dict[str, Any]]:
        """Datums for non-blank lines, in order; stops with InputLineError at a bad line.

        Lines given as bytes must be strict UTF-8 (RFC 8259), whatever the locale.
        """
        for line_no, raw in enumerate(lines, 1):
            line = _utf8(raw, line_no) if isinstance(raw, bytes) else raw
            if line.strip():
                yield self.parse(line, line_no)

    # -- converters built from the schema ------------------------------------------------

    def _converter(self, schema: Any, namespace: str) -> Convert:
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return _PRIMITIVES[schema]
            full = schema if "." in schema else f"{namespace}.{schema}"
            # Late-bound: a named type may be used before it is registered (recursion).
            return lambda value, path: self._named[full](value, path)  # noqa: PLW0108
        if isinstance(schema, list):
            branches = [s for s in schema if s != "null"]
            if len(schema) == 2 and len(branches) == 1:
                inner = self._converter(branches[0], namespace)
                return lambda value, path: None if value is None else inner(value, path)
            return self._tagged_union(schema, namespace)
        kind = schema["type"]
        if kind == "array":
            items = self._converter(schema["items"], namespace)
            return lambda value, path: [
                items(v, f"{path}[{i}]") for i, v in enumerate(_typed(value, list, path))
            ]
        if kind == "enum":
            return self._register(schema, namespace, _enum(schema["symbols"]))
        if kind == "record":
            ns = schema.get("namespace", namespace)
            fields = [
                (f["name"], self._converter(f["type"], ns), _optional(f)) for f in schema["fields"]
            ]
            return self._register(schema, namespace, _record(fields))
        return self._converter(kind, namespace)  # {"type": "long", "logicalType": ...}

    def _register(self, schema: dict[str, Any], namespace: str, convert: Convert) -> Convert:
        ns = schema.get("namespace", namespace)
        self._named[f"{ns}.{schema['name']}"] = convert
        return convert

    def _tagged_union(self, branches: list[Any], namespace: str) -> Convert:
        variants: dict[str, tuple[str, Convert, bool]] = {}
        for branch in branches:
            convert = self._converter(branch, namespace)
            ns = branch.get("namespace", namespace)
            unit = not branch["fields"]
            inner = _NEWTYPE_SCALARS.get(branch["name"])
            if inner is not None:
                convert = _wrap(inner, convert)
            variants[branch["name"]] = (f"{ns}.{branch['name']}", convert, unit)
        known = ", ".join(variants)

        def convert_union(value: Any, path: str) -> tuple[str, Any]:
            if isinstance(value, str):
                name, body = value, None
            elif isinstance(value, dict) and len(value) == 1:
                ((name, body),) = value.items()
            else:
                raise _Invalid(f'{path}: expected {{"Variant": ...}} or "UnitVariant" ({known})')
            found = variants.get(name)
            if found is None:
                raise _Invalid(f"{path}: unknown variant {name!r} (known: {known})")
            full, convert, unit = found
            if unit:
                if body is not None:
                    raise _Invalid(f'{path}: {name} is a unit variant, written as "{name}"')
                return full, {}
            if body is None:
                raise _Invalid(f"{path}: {name} needs a value")
            return full, convert(body, f"{path}.{name}")

        return convert_union


def _wrap(field: str, convert: Convert) -> Convert:
    return lambda value, path: convert({field: value}, path)


def _optional(field: dict[str, Any]) -> bool:
    t = field["type"]
    return isinstance(t, list) and "null" in t


def _record(fields: list[tuple[str, Convert, bool]]) -> Convert:
    def convert(value: Any, path: str) -> dict[str, Any]:
        obj = _typed(value, dict, path)
        out: dict[str, Any] = {}
        for name, conv, optional in fields:
            sub = f"{path}.{name}"
            if name not in obj:
                if not optional:
                    raise _Invalid(f"{sub}: missing")
                out[name] = None
            else:
                out[name] = conv(obj[name], sub)
        return out

    return convert


def _enum(symbols: list[str]) -> Convert:
    allowed = frozenset(symbols)

    def convert(value: Any, path: str) -> str:
        # The type first: a list or an object is unhashable and cannot be looked up in a set.
        if not isinstance(value, str) or value not in allowed:
            raise _Invalid(f"{path}: {_shown(value)} is not one of {', '.join(symbols)}")
        return value

    return convert


def _shown(value: Any) -> str:
    """A scalar as written; a container by its type only (never the payload, never deep)."""
    if isinstance(value, (list, dict)):
        return f"a JSON {'array' if isinstance(value, list) else 'object'}"
    return repr(value)


def _typed(value: Any, kind: type, path: str) -> Any:
    if not isinstance(value, kind):
        raise _Invalid(f"{path}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _required(obj: dict[str, Any], name: str, path: str) -> Any:
    if name not in obj:
        raise _Invalid(f"{path + '.' if path else ''}{name}: missing")
    return obj[name]


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"{path}: expected a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Invalid(f"{path}: contains a lone surrogate (not valid UTF-8)") from None
    return value


def _boolean(value: Any, path: str) -> bool:
    return bool(_typed(value, bool, path))


def _u32(value: Any, path: str) -> int:
    # Every long inside a bus event is a u32 of the original; Avro's int would be i32.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= U32_MAX:
        raise _Invalid(f"{path}: {_shown(value)} is not an unsigned 32-bit integer (0..{U32_MAX})")
    return value


def _int32(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**31) <= value < 2**31:
        raise _Invalid(f"{path}: {_shown(value)} is not a 32-bit integer")
    return value


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(f"{path}: expected a number, got {type(value).__name__}")
    return float(value)


_PRIMITIVES: Final[dict[str, Convert]] = {
    "string": _string,
    "boolean": _boolean,
    "long": _u32,
    "int": _int32,
    "float": _number,
    "double": _number,
}
