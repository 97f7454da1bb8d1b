"""Keep credentials out of log records that libraries write for us.

The websockets library logs every handshake header at DEBUG (``> Authorization: Bearer
<device token>`` on the client side, ``< Authorization: ...`` on the server side, where
uvicorn hands it the ``uvicorn.error`` logger). A filter on those loggers rewrites such
records before any handler sees them, whatever the level or the handlers an app set up:
the header's name stays (debugging a handshake still works), its value does not.

A filter on a logger applies to the records created through that logger, so it is
installed on the exact loggers that write them (``install``), not on the root.
"""

from __future__ import annotations

import logging
import re
from typing import Any

REDACTED = "[redacted]"

#: Headers whose values are credentials (compared in lower case).
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie",
                            # the browser client's WebSocket token travels here
                            "sec-websocket-protocol"})

#: "Bearer <token>" and friends anywhere in a text (a header line logged as one string, an
#: exception's message).
_CREDENTIAL = re.compile(r"(?i)\b(bearer|basic|digest)([ \t]+)[^\s'\",;]+")
#: "Authorization: <anything>" written as one line.
_HEADER_LINE = re.compile(
    r"(?i)\b(authorization|proxy-authorization|cookie|set-cookie)([ \t]*[:=][ \t]*)[^\r\n'\"]+")


def redact_text(text: str) -> str:
    """``text`` with credential values replaced by ``[redacted]``."""
    text = _HEADER_LINE.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
    return _CREDENTIAL.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, (bytes, bytearray)):
        return redact_text(bytes(value).decode("latin-1")).encode("latin-1")
    return value


class RedactCredentials(logging.Filter):
    """Rewrites a record's message and arguments so that no credential reaches a handler.

    Never drops a record. A ``"%s: %s"`` header record whose name is one of
    ``SECRET_HEADERS`` gets its value replaced whatever it looks like; other string
    arguments and the message lose anything that looks like a credential.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args:
            items = list(args)
            for i, item in enumerate(items):
                name = items[i - 1] if i > 0 else None
                if isinstance(name, (str, bytes)) and _is_secret_header(name) \
                        and isinstance(item, (str, bytes)):
                    items[i] = REDACTED if isinstance(item, str) else REDACTED.encode()
                else:
                    items[i] = _redact_value(item)
            record.args = tuple(items)
        elif isinstance(args, dict):
            record.args = {k: REDACTED if isinstance(k, str) and _is_secret_header(k)
                           else _redact_value(v) for k, v in args.items()}
        if isinstance(record.msg, str):
            record.msg = redact_text(record.msg)
        return True


def _is_secret_header(name: str | bytes) -> bool:
    text = name.decode("latin-1") if isinstance(name, bytes) else name
    return text.strip().lower() in SECRET_HEADERS


#: One instance, so installing twice adds it once (``Logger.addFilter`` checks identity).
FILTER = RedactCredentials()


def install(*logger_names: str) -> None:
    """Add the redacting filter to each named logger (idempotent)."""
    for name in logger_names:
        logging.getLogger(name).addFilter(FILTER)


__all__ = ["FILTER", "REDACTED", "RedactCredentials", "install", "redact_text"]
