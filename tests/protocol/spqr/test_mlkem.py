"""ML-KEM-768 and its incremental split, checked against ``cryptography`` and the vectors."""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives.asymmetric.mlkem import (
    MLKEM768PrivateKey,
    MLKEM768PublicKey,
)

from cipherpost.protocol.spqr import incremental, mlkem768

from .helpers import RUNS, H, flip, load

SEEDS = [random.Random(i).randbytes(64) for i in range(4)]


@pytest.mark.parametrize("seed", SEEDS, ids=range(len(SEEDS)))
def test_keygen_matches_cryptography(seed: bytes) -> None:
    ek, dk = mlkem768.keygen(seed[:32], seed[32:])
    private = MLKEM768PrivateKey.from_seed_bytes(seed)
    assert ek == private.public_key().public_bytes_raw()
    assert dk[1152:2336] == ek and dk[2336:2368] == mlkem768.h(ek) and dk[2368:] == seed[32:]
    pair = incremental.generate(lambda n: seed[:n])
    assert pair.header == ek[1152:] + mlkem768.h(ek) and pair.ek == ek[:1152]
    assert pair.dk == seed


@pytest.mark.parametrize("seed", SEEDS, ids=range(len(SEEDS)))
def test_split_encapsulation_decapsulates_with_cryptography(seed: bytes) -> None:
    rnd = random.Random(seed)
    pair = incremental.generate(lambda n: seed[:n])
    ct1, state, shared = incremental.encaps1(pair.header, rnd.randbytes)
    assert len(ct1) == 960
    assert incremental.ek_matches_header(pair.ek, pair.header)
    ct2 = incremental.encaps2(pair.ek, state)
    assert len(ct2) == 128
    private = MLKEM768PrivateKey.from_seed_bytes(seed)
    assert private.decapsulate(ct1 + ct2) == shared
    assert incremental.decapsulate(pair.dk, ct1, ct2) == shared
    _, expanded = mlkem768.keygen(seed[:32], seed[32:])
    assert incremental.decapsulate(expanded, ct1, ct2) == shared
    # Implicit rejection: a tampered ciphertext gives the same pseudo-random secret both ways.
    bad = flip(ct1 + ct2, 9)
    rejected = private.decapsulate(bad)
    assert rejected != shared
    assert mlkem768.decapsulate(expanded, bad) == rejected
    assert incremental.decapsulate(pair.dk, bad[:960], bad[960:]) == rejected


def test_cryptography_encapsulation_decapsulates_with_the_expanded_key() -> None:
    seed = SEEDS[0]
    _, expanded = mlkem768.keygen(seed[:32], seed[32:])
    public = MLKEM768PrivateKey.from_seed_bytes(seed).public_key()
    for _ in range(3):
        shared, ct = public.encapsulate()
        assert mlkem768.decapsulate(expanded, ct) == shared


def _recorded_epochs() -> list[dict]:
    return [e for name in RUNS for e in load(name)["epochs"]]


@pytest.mark.parametrize("epoch", _recorded_epochs(), ids=lambda e: str(e["epoch"]))
def test_recorded_incremental_encapsulation(epoch: dict) -> None:
    header, ek, m = H(epoch["hdr"]), H(epoch["ek"]), H(epoch["encaps_m"])
    ct1, state, shared = incremental.encaps1(header, lambda n: m[:n])
    assert ct1.hex() == epoch["ct1"]
    assert shared.hex() == epoch["mlkem_ss"]
    assert incremental.ek_matches_header(ek, header)
    assert incremental.encaps2(ek, state).hex() == epoch["ct2"]
    dk = H(epoch["dk"])
    assert incremental.decapsulate(dk, H(epoch["ct1"]), H(epoch["ct2"])) == shared
    # The same through cryptography's public key: standard ek = ek || rho.
    full = MLKEM768PublicKey.from_public_bytes(ek + header[:32])
    assert full.public_bytes_raw() == dk[1152:2336]


def test_ek_header_mismatch_and_modulus() -> None:
    epoch = _recorded_epochs()[0]
    header, ek = H(epoch["hdr"]), H(epoch["ek"])
    assert not incremental.ek_matches_header(flip(ek, 100), header)
    assert not incremental.ek_matches_header(ek, flip(header, 3))  # rho
    assert not incremental.ek_matches_header(ek, flip(header, 300))  # H(ek)
    assert not incremental.ek_matches_header(ek[:-1], header)
    assert not incremental.ek_matches_header(ek, header[:-1])
    # A coefficient >= q with a header that hashes it: only the modulus check catches it.
    bad = bytearray(ek)
    bad[0] = 0xFF
    bad[1] |= 0x0F  # first 12-bit value = 4095
    bad_header = header[:32] + mlkem768.h(bytes(bad) + header[:32])
    assert not mlkem768.ek_modulus_ok(bytes(bad))
    assert not incremental.ek_matches_header(bytes(bad), bad_header)
    with pytest.raises(ValueError):
        MLKEM768PublicKey.from_public_bytes(bytes(bad) + header[:32])


def test_size_misuse_is_a_value_error() -> None:
    pair = incremental.generate(lambda n: SEEDS[1][:n])
    with pytest.raises(ValueError):
        incremental.encaps1(pair.header[:-1], lambda n: bytes(n))
    _, state, _ = incremental.encaps1(pair.header, lambda n: bytes(n))
    with pytest.raises(ValueError):
        incremental.encaps2(pair.ek + b"\x00", state)
    with pytest.raises(ValueError):
        incremental.decapsulate(pair.dk[:63], bytes(960), bytes(128))
    with pytest.raises(ValueError):
        incremental.decapsulate(pair.dk, bytes(959), bytes(128))
    with pytest.raises(ValueError):
        mlkem768.decapsulate(bytes(2399), bytes(1088))


def test_key_material_stays_out_of_reprs() -> None:
    pair = incremental.generate(lambda n: SEEDS[2][:n])
    _, state, _ = incremental.encaps1(pair.header, lambda n: b"\x42" * n)
    assert pair.dk.hex()[:16] not in repr(pair)
    assert "42424242" not in repr(state)
