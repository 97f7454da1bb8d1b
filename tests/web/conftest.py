"""Fixtures of the browser tests (helpers and the per-test fixtures: tests/web/browsing.py).

Each xdist worker starts one chromium for all its browser tests: a chromium and its Node
driver took seconds to start under load, once per module before. Tests do not leak into
each other through it: ``browser`` closes every browser context a test opened (its pages,
IndexedDB and console problems) when the test ends, and a test that left the driver in the
middle of a command gets a new one after it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .browsing import Chromium, browser, built, relay

__all__ = ["browser", "built", "relay"]


@pytest.fixture(scope="session")
def _chromium() -> Iterator[Chromium]:
    chromium = Chromium()
    try:
        yield chromium
    finally:
        chromium.close()
