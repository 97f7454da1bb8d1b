"""The sealed-sender trust root of the key file against the one this database's relays
serve (``sealed_sender_root``, migration 0010).

Clients pin the trust root the relay served when they registered. Every relay process on
one database must therefore serve the same root, i.e. read the same key file
(``settings.sealed_sender_keys``). A process given a file of its own (a second host, a
restore onto a new host without the file) used to make a new root silently, and clients
dropped the sealed messages it certified. The first process to start stores its root in
the database; a later one whose file holds another root refuses to start, naming the
file and the fix. Replacing the root on purpose (a leaked root) is an operator's act:
``cipherpost-admin trust-root replace`` (audited).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy.exc
from sqlalchemy import Connection, delete, insert, select

from .key_chain import KeyChain, KeyChainError
from .storage.engine import Database
from .storage.schema import sealed_sender_root

ROW_ID = 1


class TrustRootMismatch(KeyChainError):
    """The key file's trust root is not the one this database's relays serve."""


@dataclass(frozen=True)
class StoredRoot:
    trust_root: bytes
    stored_at: int


def text(key: bytes) -> str:
    """A trust root as clients show it (``cipherpost trust-root``): base64."""
    return base64.b64encode(key).decode("ascii")


def stored(conn: Connection) -> StoredRoot | None:
    """The trust root this database's relays serve, if one started yet."""
    row = conn.execute(select(sealed_sender_root).where(
        sealed_sender_root.c.id == ROW_ID)).first()
    return None if row is None else StoredRoot(bytes(row.trust_root), int(row.stored_at))


def check(db: Database, chain: KeyChain, path: Path, now_ms: int) -> None:
    """Store the key file's root if the database holds none (the first start); else
    refuse a file whose root differs.

    Raises:
        TrustRootMismatch: the key file at ``path`` holds another root than the stored one.
    """
    root = chain.trust_root.serialize()
    for _attempt in range(2):  # a concurrent first start may insert between our two steps
        try:
            with db.writer.begin() as conn:
                found = stored(conn)
                if found is None:
                    conn.execute(insert(sealed_sender_root).values(
                        id=ROW_ID, trust_root=root, stored_at=now_ms))
                    return
        except sqlalchemy.exc.IntegrityError:
            continue
        if found.trust_root == root:
            return
        day = datetime.fromtimestamp(found.stored_at / 1000, UTC).strftime("%Y-%m-%d")
        raise TrustRootMismatch(
            f"the sealed-sender key file {path} holds trust root {text(root)}, but the "
            f"relays of this database serve trust root {text(found.trust_root)} (stored "
            f"{day}), which clients have pinned: they would drop every sealed message "
            f"this relay certifies. Give this relay the key file the others use (copy it "
            f"from their host, or restore it from its backup, mode 0600; or point "
            f"sealed_sender_keys at it), and delete {path} if this relay made it. Only to "
            f"replace the trust root on purpose (a leaked root, docs/operations.md): "
            f"cipherpost-admin trust-root replace")
    raise TrustRootMismatch("the stored sealed-sender trust root could not be read")


def replace(conn: Connection, chain: KeyChain, now_ms: int) -> StoredRoot | None:
    """Make ``chain``'s root the one this database's relays serve; the one it replaces."""
    old = stored(conn)
    conn.execute(delete(sealed_sender_root))
    conn.execute(insert(sealed_sender_root).values(
        id=ROW_ID, trust_root=chain.trust_root.serialize(), stored_at=now_ms))
    return old
