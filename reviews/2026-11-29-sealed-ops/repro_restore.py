"""Reviewer's reproducer for O1 and O2 (not part of the suite): a backup file's mode, and
account security state changed after a backup that a restore brings back.

    .venv/bin/python reviews/2026-11-29-sealed-ops/repro_restore.py
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

from sqlalchemy import delete, insert, select, update

from cipherpost.server import backup as backups
from cipherpost.server.storage.engine import Database
from cipherpost.server.storage.schema import (
    accounts,
    devices,
    recovery,
    two_factor,
    two_factor_codes,
)

ACCOUNT = "00000000-0000-4000-8000-000000000001"


def main() -> int:
    os.umask(0o022)  # the usual default
    with tempfile.TemporaryDirectory() as scratch:
        db = Database(f"sqlite:///{scratch}/relay.db")
        db.migrate()
        with db.writer.begin() as conn:
            conn.execute(insert(accounts).values(id=ACCOUNT, username="alice",
                                                 identity_key=b"\x05OLD-COMPROMISED",
                                                 created_at=1))
            conn.execute(insert(devices).values(account_id=ACCOUNT, device_id=1,
                                                registration_id=1, token_hash=b"t" * 32,
                                                created_at=1, last_seen=1))
            conn.execute(insert(recovery).values(account_id=ACCOUNT, lookup_id=b"l" * 16,
                                                 auth_hash=b"OLD-LEAKED-SECRET",
                                                 blob=b"b", updated_at=1))
            conn.execute(insert(two_factor).values(account_id=ACCOUNT,
                                                   secret=b"TOTP-SECRET-IN-CLEAR",
                                                   enabled=True, created_at=1))
            conn.execute(insert(two_factor_codes).values(account_id=ACCOUNT,
                                                         code_hash=b"SPENT-CODE"))
        path = Path(scratch) / "backup.db"
        backups.backup(db, path, 10, "admin")
        mode = stat.S_IMODE(path.stat().st_mode)
        print(f"O1 backup file mode: {mode:o} (world-readable: {bool(mode & 0o004)}); "
              f"holds the TOTP secret in clear: {b'TOTP-SECRET-IN-CLEAR' in path.read_bytes()}")
        # After the backup the user resets the identity (old key compromised), rotates the
        # leaked recovery secret and spends a 2FA recovery code.
        with db.writer.begin() as conn:
            conn.execute(update(accounts).values(identity_key=b"\x05NEW"))
            conn.execute(update(recovery).values(auth_hash=b"NEW-SECRET"))
            conn.execute(delete(two_factor_codes))
        backups.restore(db, path, 20, "admin", force=True)
        with db.reader.connect() as conn:
            print("O2 after restore: identity key",
                  bytes(conn.execute(select(accounts.c.identity_key)).scalar_one()),
                  "| recovery auth hash",
                  bytes(conn.execute(select(recovery.c.auth_hash)).scalar_one()),
                  "| 2FA codes", conn.execute(select(two_factor_codes)).all())
        db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
