"""Look for secrets (canary strings, key bytes, tokens) in files and text, in every form
they could take there: raw bytes, UTF-8, hex (both cases), Python's and protobuf's escaped
forms of bytes, and base64 / base64url at each of the three alignments a substring can
have inside a longer encoded value."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

MIN_BASE64_BYTES = 12  # shorter needles would match by chance


_NAMED = {9: b"\\t", 10: b"\\n", 13: b"\\r"}


def _c_escaped(data: bytes) -> bytes:
    """As protobuf's text format (a message's repr) writes bytes: octal escapes."""
    out = bytearray()
    for b in data:
        if b in _NAMED:
            out += _NAMED[b]
        elif b in b"\\\"'":
            out += b"\\" + bytes((b,))
        elif 0x20 <= b < 0x7F:
            out.append(b)
        else:
            out += b"\\%03o" % b
    return bytes(out)


def encodings(secret: bytes) -> dict[str, bytes]:
    """Needles for ``secret``: its raw bytes, hex, and base64 (standard and url-safe) of
    ``secret[k:]`` for k = 0, 1, 2 without the last, partial quartet; so a secret inside a
    longer base64 value is found whatever its offset."""
    out = {"raw": secret, "hex": secret.hex().encode(), "HEX": secret.hex().upper().encode(),
           "python-repr": repr(secret)[2:-1].encode(),
           "c-escaped": _c_escaped(secret)}
    for k in range(3):
        tail = secret[k:]
        usable = len(tail) - len(tail) % 3
        if usable >= MIN_BASE64_BYTES:
            out[f"base64+{k}"] = base64.b64encode(tail[:usable])
            out[f"base64url+{k}"] = base64.urlsafe_b64encode(tail[:usable])
    return out


@dataclass
class Scan:
    """What a scan looked at and what it found."""

    secrets: Mapping[str, bytes]
    needles: dict[tuple[str, str], bytes] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    bytes_scanned: int = 0
    hits: list[tuple[str, str, str]] = field(default_factory=list)  # (where, secret, form)

    def __post_init__(self) -> None:
        for name, secret in self.secrets.items():
            for form, needle in encodings(secret).items():
                self.needles[(name, form)] = needle

    def data(self, where: str, data: bytes) -> None:
        self.bytes_scanned += len(data)
        for (name, form), needle in self.needles.items():
            if needle in data:
                self.hits.append((where, name, form))

    def text(self, where: str, text: str) -> None:
        self.data(where, text.encode("utf-8", "surrogateescape"))

    def path(self, path: Path) -> None:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file():
                    self.path(child)
            return
        if path.is_file():
            self.files.append(str(path))
            self.data(str(path), path.read_bytes())

    def paths(self, paths: Iterable[Path]) -> None:
        for path in paths:
            self.path(path)

    def summary(self) -> dict[str, object]:
        return {"secrets": len(self.secrets), "needles": len(self.needles),
                "files": len(self.files), "bytes_scanned": self.bytes_scanned,
                "hits": len(self.hits), "hit_list": [list(h) for h in self.hits[:20]]}
