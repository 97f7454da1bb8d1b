"""Conformance tooling: the JSON-lines interop peer of ``shared/interop/PEER.md``."""
