"""Build registration bodies and drive the relay from tests."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from typing import Any

from alembic import command
from alembic.config import Config

from cipherpost.protocol import IdentityKeyPair, KyberPreKeyRecord, PreKeyRecord, SignedPreKeyRecord
from cipherpost.server.storage.engine import MIGRATIONS, Database

NOW_MS = 1_790_000_000_000


def run_alembic(db: Database, action: str, revision: str) -> None:
    """``alembic <action> <revision>`` ("upgrade", "downgrade") on ``db``, in one
    transaction of its writer (the migration tests step one revision at a time)."""
    with db.writer.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        getattr(command, action)(config, revision)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class KeyMaker:
    """One device's keys, able to produce upload bodies."""

    identity: IdentityKeyPair = field(default_factory=lambda: IdentityKeyPair.generate(
        os.urandom))
    registration_id: int = field(default_factory=lambda: int.from_bytes(os.urandom(2)) % 16380
                                 + 1)
    next_id: int = 1

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    def signed(self) -> dict[str, Any]:
        r = SignedPreKeyRecord.generate(self._id(), self.identity, NOW_MS, os.urandom)
        return {"key_id": r.id, "public_key": b64(r.key_pair.public.serialize()),
                "signature": b64(r.signature)}

    def kyber(self) -> dict[str, Any]:
        r = KyberPreKeyRecord.generate(self._id(), self.identity, NOW_MS, os.urandom)
        return {"key_id": r.id, "public_key": b64(r.key_pair.public.serialize()),
                "signature": b64(r.signature)}

    def one_time(self, n: int) -> list[dict[str, Any]]:
        out = []
        for _ in range(n):
            r = PreKeyRecord.generate(self._id(), os.urandom)
            out.append({"key_id": r.id, "public_key": b64(r.key_pair.public.serialize())})
        return out

    def device_body(self, *, one_time: int = 3, kyber: int = 2, **extra: Any) -> dict[str, Any]:
        return {
            "registration_id": self.registration_id,
            "identity_key": b64(self.identity.public.serialize()),
            "signed_prekey": self.signed(),
            "last_resort_kyber_prekey": self.kyber(),
            "one_time_prekeys": self.one_time(one_time),
            "kyber_prekeys": [self.kyber() for _ in range(kyber)],
            **extra,
        }

    def linked(self) -> KeyMaker:
        """Another device of the same account (same identity, new registration id)."""
        return KeyMaker(identity=self.identity)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
