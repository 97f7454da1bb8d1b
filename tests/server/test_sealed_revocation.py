"""Revoking a leaked sealed-sender server key (review 2026-11-29-sealed-ops, R4): a
rotation with ``revoke_old`` lists the old key id, the relay serves the list with the
trust root, and a key file whose current key is revoked is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cipherpost.server import Settings, create_app
from cipherpost.server.key_chain import KeyChainError, load_or_create, rotate_server_key
from cipherpost.server.key_chain import main as key_chain_main
from cipherpost.server.settings import sealed_sender_key_file


def test_a_leaked_server_key_is_revoked_and_served(settings: Settings,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = sealed_sender_key_file(settings)
    assert load_or_create(path).revoked_key_ids == frozenset()
    rotate_server_key(path)  # routine: nothing revoked
    assert load_or_create(path).revoked_key_ids == frozenset()
    key_chain_main(["rotate", "--revoke-old", str(path)])
    assert capsys.readouterr().out.endswith("server key id: 3\nrevoked server key ids: 2\n")
    chain = load_or_create(path)
    assert chain.server_certificate.key_id == 3 and chain.revoked_key_ids == {2}
    with TestClient(create_app(settings)) as client:
        answer = client.get("/v1/certificates/trust-root").json()
    assert answer["server_key_id"] == 3 and answer["revoked_server_key_ids"] == [2]
    assert rotate_server_key(path, revoke_old=True).revoked_key_ids == {2, 3}


def test_revoked_ids_in_the_key_file_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    load_or_create(path)
    document = json.loads(path.read_text())
    for bad, message in (([1], "current server key id is revoked"),
                         (["2"], "must list key ids"), ([2**32], "must list key ids"),
                         ({"2": 1}, "must list key ids")):
        path.write_text(json.dumps({**document, "revoked_server_key_ids": bad}))
        with pytest.raises(KeyChainError, match=message):
            load_or_create(path)
    del document["revoked_server_key_ids"]  # a file written before revocation existed
    path.write_text(json.dumps(document))
    assert load_or_create(path).revoked_key_ids == frozenset()
