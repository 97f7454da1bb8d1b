"""Revoking a leaked sealed-sender server key (review 2026-11-29-sealed-ops, R4): a
rotation with ``revoke_old`` lists the old key id, the relay serves the list with the
trust root, and a key file whose current key is revoked is refused. R7: a key file others
may read is refused, and the root's private key can live offline."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cipherpost.protocol.certificates import SenderCertificate
from cipherpost.protocol.keys import PublicKey
from cipherpost.server import Settings, create_app
from cipherpost.server.key_chain import (
    KeyChainError,
    load_or_create,
    rotate_server_key,
    take_root_offline,
)
from cipherpost.server.key_chain import main as key_chain_main
from cipherpost.server.settings import sealed_sender_key_file

from .conftest import register


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


def test_a_key_file_others_may_read_is_refused(tmp_path: Path) -> None:
    """Review R7: an operator-made or copied key file readable by group or others is
    refused at load, naming the file and the fix."""
    path = tmp_path / "keys.json"
    load_or_create(path)
    for mode in (0o640, 0o604, 0o620, 0o644):
        path.chmod(mode)
        with pytest.raises(KeyChainError, match=f"mode {mode:o}.*chmod 600 {path}"):
            load_or_create(path)
        with pytest.raises(KeyChainError, match="chmod 600"):
            rotate_server_key(path)
        with pytest.raises(SystemExit, match="chmod 600"):
            key_chain_main(["show", str(path)])
    path.chmod(0o600)
    assert load_or_create(path).server_certificate.key_id == 1
    path.chmod(0o400)  # read-only for its owner is fine
    assert load_or_create(path).server_certificate.key_id == 1


def test_the_relay_runs_with_the_root_offline(settings: Settings, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Review R7: moving the trust root's private key off the relay host is a deployment
    step; the relay keeps issuing certificates, and rotation takes the root from its
    offline file (and leaves it out of the key file)."""
    path = sealed_sender_key_file(settings)
    first = load_or_create(path)
    offline = tmp_path / "offline" / "root.json"
    offline.parent.mkdir()
    key_chain_main(["take-root-offline", "--root-file", str(offline), str(path)])
    assert "trust_root_private" not in json.loads(path.read_text())
    assert offline.stat().st_mode & 0o777 == 0o600
    assert set(json.loads(offline.read_text())) == {"version", "trust_root_public",
                                                    "trust_root_private"}
    with pytest.raises(KeyChainError, match="already offline"):
        take_root_offline(path, tmp_path / "again.json")
    # The relay starts and issues certificates under the same root without the root key.
    with TestClient(create_app(settings)) as client:
        alice = register(client)
        root = base64.b64decode(client.get("/v1/certificates/trust-root")
                                .json()["trust_root"])
        answer = client.get("/v1/certificates/sender", headers=alice.headers)
    assert answer.status_code == 200, answer.text
    assert PublicKey.deserialize(root) == first.trust_root
    certificate = SenderCertificate.deserialize(
        base64.b64decode(answer.json()["certificate"]))
    certificate.validate([first.trust_root], answer.json()["expires"])  # raises if not
    # Rotating needs the offline file, and the result still holds no root key.
    with pytest.raises(KeyChainError, match="--root-file"):
        rotate_server_key(path)
    key_chain_main(["rotate", "--revoke-old", "--root-file", str(offline), str(path)])
    assert capsys.readouterr().out.endswith("server key id: 2\nrevoked server key ids: 1\n")
    rotated = load_or_create(path)
    assert rotated.trust_root == first.trust_root and rotated.revoked_key_ids == {1}
    assert "trust_root_private" not in json.loads(path.read_text())
    # A root file of another chain is refused; an existing target is never overwritten.
    other, other_root = tmp_path / "other.json", tmp_path / "other-root.json"
    load_or_create(other)
    take_root_offline(other, other_root)
    with pytest.raises(KeyChainError, match="does not match"):
        rotate_server_key(path, root_file=other_root)
    third = tmp_path / "third.json"
    load_or_create(third)
    with pytest.raises(KeyChainError, match="exists"):
        take_root_offline(third, offline)
    assert "trust_root_private" in json.loads(third.read_text())
