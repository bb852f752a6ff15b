"""Secrets kept out of what the job prints: URLs masked, known secret values redacted.

A URL may carry secrets in three places: the password of its user info
(``https://svc:s3cret@host``), user info that is a token alone (``https://TOKEN@host``) and
query parameters (``?api_key=...``). :func:`mask_url` hides all three whatever the scheme's
case. What a library raises or logs may quote a URL or a secret verbatim (the registry client's
own messages quote its URL whole), so text that did not come from us goes through
:func:`redact` with the secret values the settings hold; :func:`redact_logs` does that for every
log record of the process.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

__all__ = ["MASK", "mask_url", "redact", "redact_logs", "url_secrets"]

MASK = "***"

#: Secret values shorter than this are not redacted from free text (``?v=1`` would blank
#: every digit 1 of a message); a URL masks them all the same.
MIN_SECRET = 4

# user info in anything that looks like a URL, when the text does not parse as one
_USERINFO = re.compile(r"(?i)([a-z][a-z0-9+.-]*://)([^/@\s]*)@")
_QUERY_VALUE = re.compile(r"([?&][^=&#\s]+=)[^&#\s]*")


def mask_url(url: str) -> str:
    """``https://svc:s3cret@h`` → ``https://svc:***@h``; ``https://TOKEN@h`` → ``https://***@h``;
    every query parameter's value → ``***``; a fragment dropped. Other URLs unchanged."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a malformed port)
    except ValueError:
        return _mask_text(url)
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if colon else f"{MASK}@{host}"
    query = "&".join(
        f"{name}={MASK}" if value or "=" in pair else name
        for pair in parts.query.split("&")
        if pair
        for name, _, value in [pair.partition("=")]
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query, fragment=""))


def _mask_text(text: str) -> str:
    def userinfo(match: re.Match[str]) -> str:
        user, colon, _ = match.group(2).partition(":")
        return f"{match.group(1)}{user}:{MASK}@" if colon else f"{match.group(1)}{MASK}@"

    text = _USERINFO.sub(userinfo, text)
    return _QUERY_VALUE.sub(lambda m: f"{m.group(1)}{MASK}", text.partition("#")[0])


def url_secrets(url: str | None) -> list[str]:
    """The secret values a URL carries: its password, a token user info, query values."""
    if not url:
        return []
    found: list[str] = []
    try:
        parts = urlsplit(url)
        netloc, query = parts.netloc, parts.query
    except ValueError:
        netloc = url.partition("://")[2].partition("/")[0]
        query = url.partition("?")[2]
    userinfo, at, _ = netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        found.append(password if colon else user)
    found.extend(value for _, value in parse_qsl(query.partition("#")[0]))
    return [value for value in found if value]


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value (as is, URL-quoted or unquoted) replaced by ``***``."""
    forms = {form for s in secrets if s for form in (s, quote(s, safe=""), unquote(s))}
    for secret in sorted((f for f in forms if len(f) >= MIN_SECRET), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def redact_logs(secrets: Iterable[str]) -> Callable[[], None]:
    """Every log record made from now on is redacted (its message and its traceback) of
    ``secrets``; returns what undoes it. A record factory, not a filter: a filter on a logger
    does not see what its children propagate, and handlers come and go with Faust's logging
    setup."""
    values = sorted({s for s in secrets if s and len(s) >= MIN_SECRET})
    previous = logging.getLogRecordFactory()
    if not values:
        return lambda: None

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        message = record.getMessage()
        cleaned = redact(message, values)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            trace = logging.Formatter().formatException(record.exc_info)
            if redact(trace, values) != trace:
                record.exc_text = redact(trace, values)
        return record

    logging.setLogRecordFactory(factory)

    def undo() -> None:
        if logging.getLogRecordFactory() is factory:
            logging.setLogRecordFactory(previous)

    return undo
