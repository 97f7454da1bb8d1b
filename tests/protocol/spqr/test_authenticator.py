"""KDFs and the braid authenticator (spqr-digest §3, §4.1) against the recorded vectors."""

from __future__ import annotations

import pytest

from cipherpost.protocol.spqr.authenticator import Authenticator
from cipherpost.protocol.spqr.errors import SpqrAuthenticationFailed
from cipherpost.protocol.spqr.kdf import hkdf, scka_key

from .helpers import RUNS, H, flip, load

MODEL = load("model-fixed-inputs.json")["kdf"]


def test_hkdf_matches_rfc5869_case_1() -> None:
    okm = hkdf(H("000102030405060708090a0b0c"), b"\x0b" * 22,
               H("f0f1f2f3f4f5f6f7f8f9"), 42)
    assert okm.hex() == ("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
                         "34007208d5b887185865")


def test_model_authenticator() -> None:
    auth = Authenticator.initial(H(MODEL["auth_key"]))
    assert auth.root_key.hex() == MODEL["authenticator_init"]["root_key"]
    assert auth.mac_key.hex() == MODEL["authenticator_init"]["mac_key"]
    hdr = MODEL["hdr_mac_epoch1"]
    assert auth.mac_header(1, H(hdr["hdr"])).hex() == hdr["mac"]
    after = MODEL["after_update_1"]
    updated = auth.update(1, H(after["epoch_secret"]))
    assert (updated.root_key.hex(), updated.mac_key.hex()) == (after["root_key"],
                                                               after["mac_key"])
    assert updated.mac_ciphertext(1, H(after["ct"])).hex() == after["ct_mac_epoch1"]


def test_model_scka_key() -> None:
    case = MODEL["scka_key"]
    assert scka_key(H(case["mlkem_ss"]), case["epoch"]).hex() == case["secret"]
    assert scka_key(H(case["mlkem_ss"]), 2).hex() == case["epoch2_secret"]


@pytest.mark.parametrize("name", RUNS)
def test_recorded_authenticator_through_the_epochs(name: str) -> None:
    run = load(name)
    auth_key = H(run["pqxdh_okm96"])[64:]
    assert auth_key.hex() == run["spqr_auth_key"]
    auth = Authenticator.initial(auth_key)
    assert auth.root_key.hex() == run["authenticator_init"]["root_key"]
    assert auth.mac_key.hex() == run["authenticator_init"]["mac_key"]
    for epoch in run["epochs"]:
        e = epoch["epoch"]
        hdr, hdr_mac = H(epoch["hdr"]), H(epoch["hdr_mac"])
        auth.verify_header(e, hdr, hdr_mac)
        secret = scka_key(H(epoch["mlkem_ss"]), e)
        assert secret.hex() == epoch["epoch_secret"]
        auth = auth.update(e, secret)
        assert auth.root_key.hex() == epoch["auth_root_after"]
        assert auth.mac_key.hex() == epoch["auth_mac_after"]
        ct = H(epoch["ct1"]) + H(epoch["ct2"])
        auth.verify_ciphertext(e, ct, H(epoch["ct_mac"]))
        # Wrong epoch, flipped bits or a short MAC fail.
        for bad in (lambda: auth.verify_ciphertext(e + 1, ct, H(epoch["ct_mac"])),
                    lambda: auth.verify_ciphertext(e, flip(ct, 77), H(epoch["ct_mac"])),
                    lambda: auth.verify_ciphertext(e, ct, flip(H(epoch["ct_mac"]), 255)),
                    lambda: auth.verify_ciphertext(e, ct, H(epoch["ct_mac"])[:31]),
                    lambda: auth.verify_header(e, flip(hdr, 3), hdr_mac)):
            with pytest.raises(SpqrAuthenticationFailed):
                bad()


def test_authenticator_repr_hides_keys() -> None:
    auth = Authenticator.initial(b"\x29" * 32)
    text = repr(auth)
    assert auth.root_key.hex()[:8] not in text and auth.mac_key.hex()[:8] not in text


def test_the_chain_step_kdf_is_hkdf_with_a_zero_salt() -> None:
    """The per-message form (HMAC written out on hashlib) against the generic one and
    against ``cryptography``'s HKDF, for the chain-step info and other lengths."""
    import random

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from cipherpost.protocol.spqr.kdf import CHAIN_NEXT, ZERO_SALT, hkdf64_halves, hkdf64_zero_salt

    rnd = random.Random(5)
    for i in range(300):
        ikm = rnd.randbytes(32 if i % 3 else rnd.randrange(0, 100))
        info = i.to_bytes(4, "big") + CHAIN_NEXT if i % 2 else rnd.randbytes(i % 90)
        want = HKDF(hashes.SHA256(), 64, ZERO_SALT, info).derive(ikm)
        assert hkdf64_zero_salt(ikm, info) == hkdf(ZERO_SALT, ikm, info, 64) == want
        assert hkdf64_halves(ikm, info) == (want[:32], want[32:])
