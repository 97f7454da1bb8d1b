"""One-time history archives (docs/spec/history.md, "Archive").

When an account keeps no history on the relay, the device that links a new one uploads an
archive of its conversations, sealed under a key that travels only inside the sealed
provisioning message. The relay keeps each part as a file beside the attachments, with a
small side file naming its account and expiry, only until a device of that account took
it (and said so with DELETE) or the day is over. Parts are swept lazily whenever the
archives are used, so no janitor is needed.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

#: The largest part (the client splits larger archives).
MAX_PART = 2 * 1024 * 1024
#: Bytes of archive parts one account may hold on the relay at once.
MAX_PER_ACCOUNT = 512 * 1024 * 1024
#: A part nobody took is deleted after this long.
TTL_MS = 24 * 3600 * 1000


class ArchiveFull(Exception):
    """The account already holds its maximum of archive bytes."""


class EmptyPart(ValueError):
    """An archive part without a byte."""


@dataclass(frozen=True)
class _Meta:
    account: str
    size: int
    expires_at: int


class Archives:
    """Archive parts under ``directory``: ``<id>`` (the sealed bytes), ``<id>.json``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _paths(self, part_id: str) -> tuple[Path, Path]:
        return self.directory / part_id, self.directory / f"{part_id}.json"

    def _metas(self) -> dict[str, _Meta]:
        found: dict[str, _Meta] = {}
        if not self.directory.is_dir():
            return found
        for path in self.directory.glob("*.json"):
            try:
                data = json.loads(path.read_text())
                found[path.stem] = _Meta(str(data["account"]), int(data["size"]),
                                         int(data["expires_at"]))
            except (OSError, ValueError, KeyError):
                continue
        return found

    def sweep(self, now_ms: int) -> None:
        """Delete the parts whose time is up."""
        for part_id, meta in self._metas().items():
            if meta.expires_at <= now_ms:
                self.delete(part_id)

    async def put(self, account: str, chunks: AsyncIterator[bytes], now_ms: int) -> tuple[str, int]:
        """Store a part for ``account``: ``(id, expires_at)``.

        Raises:
            EmptyPart: nothing sent. ValueError: larger than :data:`MAX_PART`.
            ArchiveFull: the account holds its maximum of archive bytes.
        """
        self.sweep(now_ms)
        held = sum(m.size for m in self._metas().values() if m.account == account)
        self.directory.mkdir(parents=True, exist_ok=True)
        part_id = secrets.token_urlsafe(32)
        data, meta_path = self._paths(part_id)
        partial = data.with_suffix(".part")
        size = 0
        try:
            with partial.open("wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > MAX_PART:
                        raise ValueError("too large")
                    if held + size > MAX_PER_ACCOUNT:
                        raise ArchiveFull()
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if size == 0:
                raise EmptyPart()
            partial.rename(data)
        finally:
            partial.unlink(missing_ok=True)
        expires_at = now_ms + TTL_MS
        meta_path.write_text(json.dumps({"account": account, "size": size,
                                         "expires_at": expires_at}))
        return part_id, expires_at

    def get(self, account: str, part_id: str, now_ms: int) -> Path | None:
        """The file of a live part of ``account``'s, or None."""
        self.sweep(now_ms)
        meta = self._metas().get(part_id) if _valid(part_id) else None
        data, _ = self._paths(part_id)
        if meta is None or meta.account != account or not data.is_file():
            return None
        return data

    def take_down(self, account: str, part_id: str, now_ms: int) -> bool:
        """Delete ``account``'s part (the new device has it); False if there is none."""
        if self.get(account, part_id, now_ms) is None:
            return False
        self.delete(part_id)
        return True

    def delete(self, part_id: str) -> None:
        data, meta = self._paths(part_id)
        data.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)

    def held(self, account: str) -> tuple[int, int]:
        """(parts, bytes) that ``account`` holds now (the privacy dashboard)."""
        sizes = [m.size for m in self._metas().values() if m.account == account]
        return len(sizes), sum(sizes)

    def delete_account(self, account: str) -> int:
        """Delete every part of ``account`` (the account is being deleted); how many."""
        parts = [p for p, m in self._metas().items() if m.account == account]
        for part_id in parts:
            self.delete(part_id)
        return len(parts)

    def count(self) -> int:
        """How many parts the relay holds (for tests and metrics)."""
        return len(self._metas())


def _valid(part_id: str) -> bool:
    return 40 <= len(part_id) <= 64 and all(c.isalnum() or c in "-_" for c in part_id)
