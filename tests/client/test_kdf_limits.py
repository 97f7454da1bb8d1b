"""Argon2id parameters read from outside (an export file's header, a relay's answer for a
recovery passphrase, a store's meta table) are bounded by ``crypto.MAX_PARAMS`` and refused
with a clear error before any key derivation (#10: a hostile export file could ask for
4 GiB and 64 passes)."""

from __future__ import annotations

import base64
import io
import os
import sqlite3
from pathlib import Path
from typing import Any, cast

import pytest

from cipherpost.client import export, recovery
from cipherpost.client.client import Client
from cipherpost.client.errors import ClientError
from cipherpost.client.store import crypto, database
from cipherpost.client.store.crypto import (
    MAX_PARAMS,
    TEST_PARAMS,
    Argon2Params,
    UnusableParams,
    check_params,
)
from cipherpost.client.store.database import Store, StoreError

_DEFAULTS = Argon2Params()
#: Each one bound past the cap, then ones Argon2 itself refuses.
_COSTLY = [Argon2Params(MAX_PARAMS.time_cost + 1, MAX_PARAMS.memory_kib, 2),
           Argon2Params(3, MAX_PARAMS.memory_kib + 1, 2),
           Argon2Params(3, MAX_PARAMS.memory_kib, MAX_PARAMS.parallelism + 1),
           Argon2Params(64, 4 * 1024 * 1024, 2)]     # what an export header allowed before
_INVALID = [Argon2Params(0, 65536, 2), Argon2Params(3, 65536, 0), Argon2Params(3, 15, 2)]


@pytest.fixture
def no_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any key derivation fails the test: refusals must come before it."""
    def refuse(*_args: Any, **_kwargs: Any) -> bytes:
        raise AssertionError("Argon2id ran on parameters that should have been refused")
    for module in (crypto, export, recovery):
        monkeypatch.setattr(module, "hash_secret_raw", refuse)


def test_the_cap_is_four_times_what_we_write() -> None:
    assert (MAX_PARAMS.time_cost, MAX_PARAMS.memory_kib, MAX_PARAMS.parallelism) == (
        4 * _DEFAULTS.time_cost, 4 * _DEFAULTS.memory_kib, 4 * _DEFAULTS.parallelism)
    assert check_params(MAX_PARAMS) is MAX_PARAMS
    assert check_params(_DEFAULTS) is _DEFAULTS and check_params(TEST_PARAMS) is TEST_PARAMS


@pytest.mark.parametrize("params", _COSTLY)
def test_costlier_parameters_are_refused(params: Argon2Params) -> None:
    with pytest.raises(UnusableParams, match="cost more than this client derives keys with"):
        check_params(params)


@pytest.mark.parametrize("params", _INVALID)
def test_parameters_argon2_refuses_are_refused(params: Argon2Params) -> None:
    with pytest.raises(UnusableParams, match="invalid"):
        check_params(params)


def _export_header(params: Argon2Params) -> bytes:
    return export._HEADER.pack(export.MAGIC, export.VERSION, params.time_cost,
                               params.memory_kib, params.parallelism, bytes(16), bytes(8))


@pytest.mark.parametrize("params", _COSTLY + _INVALID)
@pytest.mark.usefixtures("no_argon2")
def test_an_export_file_asking_too_much_is_refused_before_argon2(params: Argon2Params) -> None:
    data = io.BytesIO(_export_header(params) + (40).to_bytes(4, "big") + bytes(40))
    with pytest.raises(export.ExportError, match="key parameters are refused"):
        export._read(data, "export pass", TEST_PARAMS)


def test_an_export_file_within_the_cap_reaches_the_passphrase_check() -> None:
    """The cap does not refuse what we write: a header at the defaults gets as far as the
    key (then the wrong chunk)."""
    data = io.BytesIO(_export_header(TEST_PARAMS) + (40).to_bytes(4, "big") + bytes(40))
    with pytest.raises(export.ExportError, match="wrong passphrase"):
        export._read(data, "export pass", TEST_PARAMS)


@pytest.mark.usefixtures("no_argon2")
def test_export_writes_nothing_an_importer_would_refuse(tmp_path: Path) -> None:
    target = tmp_path / "alice.cpexport"
    with pytest.raises(UnusableParams):
        # refused before the client is read, so no client is needed
        export.export_account(cast(Client, None), target, "export pass", with_history=False,
                              params=_COSTLY[1])
    assert not target.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("params", _COSTLY + _INVALID[:2])
@pytest.mark.usefixtures("no_argon2")
def test_a_relay_asking_too_much_for_a_passphrase_is_refused(params: Argon2Params) -> None:
    answer = {"params": params.encode(), "salt": base64.b64encode(bytes(16)).decode()}
    with pytest.raises(ClientError, match=r"will not do|weaker"):
        recovery.relay_params(answer, TEST_PARAMS)


def test_a_relay_within_the_cap_is_followed() -> None:
    answer = {"params": MAX_PARAMS.encode(), "salt": base64.b64encode(bytes(16)).decode()}
    assert recovery.relay_params(answer, _DEFAULTS) == (MAX_PARAMS, bytes(16))


@pytest.mark.usefixtures("no_argon2")
def test_passphrase_keys_refuse_costly_parameters() -> None:
    with pytest.raises(UnusableParams):
        recovery._passphrase_keys("a long passphrase", bytes(16), _COSTLY[0])


def _tamper_meta(path: Path, value: str) -> None:
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE meta SET value = ? WHERE name = 'argon2'", (value,))
    db.close()


@pytest.mark.parametrize("value, message", [
    (_COSTLY[3].encode(), "refused: .*cost more"),
    ("3,15,2", "refused: .*invalid"),
    ("3,65536", "malformed"),
    ("9" * 5000 + ",8,1", "malformed"),
])
def test_a_store_with_tampered_parameters_is_refused(tmp_path: Path, value: str, message: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "store.db"
    Store.create(path, passphrase="pw", params=TEST_PARAMS).close()
    _tamper_meta(path, value)

    def refuse(*_args: Any, **_kwargs: Any) -> bytes:
        raise AssertionError("Argon2id ran on a tampered store's parameters")
    monkeypatch.setattr(crypto, "hash_secret_raw", refuse)
    with pytest.raises(StoreError, match=message):
        Store.open(path, passphrase="pw")


def test_a_store_is_not_made_with_costly_parameters(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with pytest.raises(UnusableParams):
        Store.create(path, passphrase="pw", params=_COSTLY[0])
    assert not os.path.exists(path)
    database.Store.create(path, passphrase="pw", params=TEST_PARAMS).close()
    Store.open(path, passphrase="pw").close()  # within the cap: it reopens
