"""Peer processes for the interop scenarios, shared per test worker."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .peers import (
    NODE_PEER,
    NODE_PEER_0103,
    PeerClient,
    node_available,
    node_peer,
    node_peer_0103,
    python_peer,
    typescript_available,
    typescript_peer,
)

IMPLEMENTATIONS = ["python", "libsignal"]
# Python and libsignal each initiating to each, then the TypeScript core (web/) with
# each of them, both ways. TypeScript with itself is covered by its own unit tests.
DIRECTIONS = [(a, b) for a in IMPLEMENTATIONS for b in IMPLEMENTATIONS] + [
    ("typescript", "python"), ("python", "typescript"),
    ("typescript", "libsignal"), ("libsignal", "typescript"),
]
# SPQR: Python requiring it (python-spqr) with libsignal 0.103 (which requires it too),
# with itself, and with libsignal 0.90 (which offers it); 0.103 with itself checks the
# scenarios' own expectations. Then the TypeScript core requiring it (typescript-spqr)
# with Python and libsignal 0.103, and with 0.90, both ways.
SPQR_DIRECTIONS = [
    ("python-spqr", "libsignal-0.103"), ("libsignal-0.103", "python-spqr"),
    ("libsignal-0.103", "libsignal-0.103"), ("python-spqr", "python-spqr"),
    ("python-spqr", "libsignal"), ("libsignal", "python-spqr"),
    ("typescript-spqr", "python-spqr"), ("python-spqr", "typescript-spqr"),
    ("typescript-spqr", "libsignal-0.103"), ("libsignal-0.103", "typescript-spqr"),
    ("typescript-spqr", "libsignal"), ("libsignal", "typescript-spqr"),
]
DIRECTIONS += SPQR_DIRECTIONS


def _require_typescript() -> None:
    if not typescript_available():
        if os.environ.get("CIPHERPOST_SKIP_TYPESCRIPT") == "1":
            pytest.skip("TypeScript peer not installed (CIPHERPOST_SKIP_TYPESCRIPT=1)")
        pytest.fail("TypeScript peer is not installed: run `make test` "
                    "(or `cd web && npm ci`)")


def _require_node(peer: Path = NODE_PEER) -> None:
    if not node_available(peer):
        if os.environ.get("CIPHERPOST_SKIP_LIBSIGNAL") == "1":
            pytest.skip("libsignal reference peer not installed (CIPHERPOST_SKIP_LIBSIGNAL=1)")
        pytest.fail("libsignal reference peer is not installed: run `make test` "
                    f"(or `cd {peer.parent.relative_to(peer.parents[2])} && npm ci`)")


@pytest.fixture(scope="session")
def peers() -> Iterator[dict[str, PeerClient]]:
    started: dict[str, PeerClient] = {}

    class Lazy(dict[str, PeerClient]):
        def __missing__(self, key: str) -> PeerClient:
            if key == "python":
                client = python_peer()
            elif key == "python-spqr":
                client = python_peer("required")
            elif key == "libsignal":
                _require_node()
                client = node_peer()
            elif key == "libsignal-0.103":
                _require_node(NODE_PEER_0103)
                client = node_peer_0103()
            elif key == "typescript":
                _require_typescript()
                client = typescript_peer()
            elif key == "typescript-spqr":
                _require_typescript()
                client = typescript_peer("required")
            else:
                raise KeyError(key)
            self[key] = client
            started[key] = client
            return client

    yield Lazy()
    for client in started.values():
        assert client.close() == 0, f"{client.name} peer exited non-zero"


@pytest.fixture(params=DIRECTIONS, ids=[f"{a}->{b}" for a, b in DIRECTIONS])
def pair(request: pytest.FixtureRequest,
         peers: dict[str, PeerClient]) -> tuple[PeerClient, PeerClient]:
    """(initiator's peer, responder's peer) for one direction."""
    a, b = request.param
    return peers[a], peers[b]
