"""The redacting log filter (cipherpost.logfilter) on the shapes of record that carry
credentials: websockets' header records on either side, one-line headers, exceptions."""

from __future__ import annotations

import logging

import pytest

from cipherpost import logfilter

TOKEN = "0b7a52e6-4a38-4bde-9a34-3c1b2b6f0c11.3.s3cr3t-TOKEN_value"


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record) + repr(record.args))


@pytest.mark.parametrize(("msg", "args"), [
    ("> %s: %s", ("Authorization", f"Bearer {TOKEN}")),          # websockets, client
    ("< %s: %s", ("authorization", f"Bearer {TOKEN}")),          # websockets, server
    ("< %s: %s", (b"authorization", f"Bearer {TOKEN}".encode())),
    ("< %s: %s", ("Proxy-Authorization", f"Basic {TOKEN}")),
    ("> %s: %s", ("Cookie", f"session={TOKEN}")),
    ("%s", (f"Authorization: Bearer {TOKEN}",)),
    (f"headers: {{'authorization': 'Bearer {TOKEN}'}}", ()),
    ("request failed: %r", (f"Authorization: Bearer {TOKEN}",)),
    ("%(h)s", {"h": f"bearer {TOKEN}"}),
])
def test_credentials_never_reach_a_handler(msg: str, args: tuple[object, ...] | dict[str, object]
                                           ) -> None:
    logger = logging.getLogger("cipherpost.test.logfilter")
    lines = Lines()
    logger.addHandler(lines)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logfilter.install(logger.name)
    logfilter.install(logger.name)                  # installing twice adds it once
    try:
        logger.debug(msg, args) if isinstance(args, dict) else logger.debug(msg, *args)
    finally:
        logger.removeHandler(lines)
    assert logger.filters.count(logfilter.FILTER) == 1
    assert len(lines.lines) == 1                       # redacted, never dropped
    assert TOKEN not in lines.lines[0] and "s3cr3t" not in lines.lines[0]
    assert "[redacted]" in lines.lines[0]


def test_other_records_are_left_alone() -> None:
    record = logging.LogRecord("x", logging.DEBUG, __file__, 1, "> %s: %s",
                               ("Host", "relay.example:443"), None)
    assert logfilter.FILTER.filter(record)
    assert record.getMessage() == "> Host: relay.example:443"
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "websocket ended", None, None)
    assert logfilter.FILTER.filter(record) and record.getMessage() == "websocket ended"


def test_the_sdk_and_the_relay_install_it() -> None:
    import cipherpost.client.socket  # noqa: F401  (installs on import)
    from cipherpost.server import create_app
    create_app()  # the relay installs it when its app is built
    for name in ("websockets.client", "uvicorn.error", "websockets.server"):
        assert logfilter.FILTER in logging.getLogger(name).filters, name
