"""Hypothesis drives every fuzz target of ``targets.py``: arbitrary bytes, mutations of
valid seeds (bit flips, cuts, insertions, overwrites, splices of two seeds) and, for JSON
inputs, valid documents with one value replaced or removed.

Quick in ``make test`` (``FUZZ_EXAMPLES`` inputs per target, derandomized so a failure
reproduces); ``HYPOTHESIS_PROFILE=long`` (``make fuzz``) runs many more, freshly random.
Each run writes its figures (inputs executed, failures, known-bug hits) to
``build/assurance/hypothesis-quick/`` or ``hypothesis-long/<target>.json``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT

from . import results
from .targets import KNOWN_BUGS, TARGETS, peer_harness, strict_known_bugs

LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES") or (5_000 if LONG else 300))


def _flip(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for pos, bit in flips:
        if out:
            out[pos % len(out)] ^= 1 << bit
    return bytes(out)


def _overwrite(data: bytes, pos: int, run: bytes) -> bytes:
    pos %= len(data) + 1
    return data[:pos] + run + data[pos + len(run):]


def _insert(data: bytes, pos: int, run: bytes) -> bytes:
    pos %= len(data) + 1
    return data[:pos] + run + data[pos:]


def _delete(data: bytes, pos: int, n: int) -> bytes:
    pos %= len(data) + 1
    return data[:pos] + data[pos + n:]


def _splice(a: bytes, b: bytes, i: int, j: int) -> bytes:
    return a[:i % (len(a) + 1)] + b[j % (len(b) + 1):]


def mutations(seeds: tuple[bytes, ...] | list[bytes]) -> st.SearchStrategy[bytes]:
    seed = st.sampled_from(list(seeds))
    pos = st.integers(0, 2**16)
    interesting = st.sampled_from([b"\x00", b"\xff", b"\x7f", b"\x80", b"\xff\xff\xff\xff",
                                   b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", b"\x00" * 8])
    run = st.binary(min_size=1, max_size=8) | interesting
    return st.one_of(
        st.binary(max_size=600),
        seed,
        st.builds(_flip, seed, st.lists(st.tuples(pos, st.integers(0, 7)), min_size=1,
                                        max_size=4)),
        seed.flatmap(lambda s: st.integers(0, len(s)).map(lambda n: s[:n])),
        st.builds(_overwrite, seed, pos, run),
        st.builds(_insert, seed, pos, run),
        st.builds(_delete, seed, pos, st.integers(1, 40)),
        st.builds(_splice, seed, seed, pos, pos),
    )


# -- JSON inputs: replace or remove one value of a valid document ----------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=10)
_REMOVE = object()


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += _paths(value, (*prefix, i))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        doc = doc[step]
    return doc


def _replaced(doc: Any, path: tuple[Any, ...], value: Any) -> bytes:
    if not path:
        return json.dumps(None if value is _REMOVE else value).encode()
    doc = copy.deepcopy(doc)
    parent = _get(doc, path[:-1])
    if value is _REMOVE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return json.dumps(doc).encode()


def _b64_mutations(doc: Any, path: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    value = _get(doc, path)
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = None
        if raw:
            return mutations([raw]).map(lambda b: base64.b64encode(b).decode())
    return json_values


def json_mutations(docs: list[Any]) -> st.SearchStrategy[bytes]:
    def one(doc: Any) -> st.SearchStrategy[bytes]:
        return st.sampled_from(_paths(doc)).flatmap(
            lambda path: st.one_of(json_values, st.just(_REMOVE), _b64_mutations(doc, path))
            .map(lambda value: _replaced(doc, path, value)))
    return st.one_of(*(one(doc) for doc in docs))


def strategy_for(name: str) -> st.SearchStrategy[bytes]:
    target = TARGETS[name]
    base = mutations(target.seeds)
    if name in ("bundle_answer", "peer_request", "relay_frame"):
        docs = [json.loads(seed) for seed in target.seeds]
        return base | json_mutations(docs)
    if name == "device_frame":  # a selector byte, then JSON
        docs = [json.loads(seed[1:]) for seed in target.seeds]
        return base | st.builds(lambda s, doc: s + doc, st.sampled_from([b"\x00", b"\x02"]),
                                json_mutations(docs))
    return base


# -- the runs --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_target(name: str) -> None:
    target = TARGETS[name]
    budget = EXAMPLES
    executed = 0

    @settings(max_examples=budget, deadline=None, derandomize=not LONG,
              database=None if not LONG else settings.default.database,
              print_blob=LONG, suppress_health_check=list(HealthCheck))
    @given(strategy_for(name))
    def run(data: bytes) -> None:
        nonlocal executed
        executed += 1
        target.run(data)

    for seed in target.seeds:  # every seed is valid input and must pass
        target.run(seed)
    hits_before = {b.id: b.hits for b in KNOWN_BUGS.values() if b.target == name}
    start = time.monotonic()
    failed = True
    try:
        run()
        failed = False
    finally:
        results.write("hypothesis-long" if LONG else "hypothesis-quick", name, {
            "target": name, "engine": "hypothesis", "long": LONG, "inputs": executed,
            "failures": int(failed), "seconds": round(time.monotonic() - start, 2),
            "known_bug_hits": {i: KNOWN_BUGS[i].hits - n for i, n in hits_before.items()},
        })
    assert executed >= min(budget, 10)  # the run really ran


@pytest.mark.parametrize("bug_id", [
    pytest.param(bug.id, marks=pytest.mark.xfail(strict=True, raises=bug.exception,
                                                 reason=bug.reason))
    for bug in KNOWN_BUGS.values()])
def test_known_bug_reproducers(bug_id: str) -> None:
    """Each known bug's reproducer, run with the bug no longer tolerated."""
    bug = KNOWN_BUGS[bug_id]
    with strict_known_bugs():
        TARGETS[bug.target].run(bug.reproducer)


def test_seeds_reach_past_the_parsers() -> None:
    """The seeds are accepted where acceptance is possible: a target whose seeds were all
    refused would fuzz only the first check of its parser."""
    from cipherpost.client.api import parse_bundles
    from cipherpost.client.content import decode

    from . import corpus as c

    assert len(parse_bundles(json.loads(c.BUNDLE_JSON))) == 1
    assert all(decode(seed).WhichOneof("body") for seed in TARGETS["content_decode"].seeds)
    harness = peer_harness()
    for seed in TARGETS["peer_request"].seeds:
        answer = harness.peer.handle_line(seed.decode())
        harness.restore()
        # (one is a replay: refused by the protocol, not as a bad request)
        assert answer is not None, seed
        assert answer["ok"] or answer["error"]["kind"] not in ("bad_request",
                                                               "internal_error"), answer


def test_atheris_driver_runs_and_counts(tmp_path: Path) -> None:
    """`make fuzz`'s coverage-guided driver works: a short run of one target reports the
    inputs libFuzzer executed and no crash."""
    pytest.importorskip("atheris")
    env = {**os.environ, "ASSURANCE_RESULTS": str(tmp_path), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "tests.assurance.fuzz_atheris", "--runs",
                           "3000", "--jobs", "1", "sender_key_message"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads((tmp_path / "atheris" / "sender_key_message.json").read_text())
    assert record["inputs"] == 3000 and record["crashes"] == 0, record


def test_seeds_of_the_newer_targets_are_accepted() -> None:
    """The newer targets' seeds get past authentication and parsing (each ``as received``
    seed opens; each "sealed by a key holder" seed is valid plaintext), so mutations of
    them reach the code behind."""
    import io

    from cipherpost.client import archive, export, history, linking
    from cipherpost.protocol.spqr.wire import SpqrMessage

    from . import targets_accounts as a
    from . import targets_protocol as p

    assert all(SpqrMessage.decode(m) for m in p.SPQR_MESSAGES)
    assert history.open_blob(a.KEYS, a.NAME, a._seal_history(a.EVENT_BYTES[0]))
    entries, more = history.parse_page(json.loads(a.HISTORY_PAGES[1]))
    assert len(entries) == 2 and more
    assert len(export._read(io.BytesIO(a.export_file(a.EXPORT_RECORDS)),
                            a.EXPORT_PASSPHRASE, a.TEST_PARAMS)) == len(a.EXPORT_RECORDS)
    assert a.RECOVERY.open(a._recovery_seal(a.ACCOUNT.SerializeToString())) == a.ACCOUNT
    assert len(archive.open_part(a.ARCHIVE_KEY, 0, 2, a._archive_seal(a.ARCHIVE_PART))
               .events) == len(a.EVENTS)
    assert linking.open_envelope(a.LINK_REQUEST, a._LINK_PRIVATE,
                                 a._provision_seal(a.PROVISION.SerializeToString())) \
        == a.PROVISION
    assert a.CODE_KEYS.open(a.CODE_KEYS.seal(a.PROVISION)) == a.PROVISION
    for seed in TARGETS["passphrase_params"].seeds:
        from cipherpost.client.recovery import relay_params
        from cipherpost.client.store.crypto import Argon2Params
        assert relay_params(json.loads(seed), Argon2Params())


def _fixed_bug_inputs() -> list[tuple[str, bytes]]:
    import struct

    from cipherpost.client import export
    from cipherpost.client.proto.app_pb2 import HistoryKeys, RecoveryBlob

    from . import targets_accounts as a

    bad_keys = RecoveryBlob()
    bad_keys.CopyFrom(a.ACCOUNT)
    bad_keys.history_keys.CopyFrom(HistoryKeys(id_key=b"abc"))
    header = export._HEADER.pack(export.MAGIC, 1, 1, 8, 2, bytes(16), bytes(8))
    return [
        ("history_page", b"{}"),                                   # KeyError before
        ("history_page", b'{"entries": [{"seq": 1e999}], "more": false}'),
        ("history_page", b'{"entries": "ab", "more": true}'),    # TypeError before
        ("export_file", b"\x00" + header + struct.pack(">I", 40) + bytes(40)),  # HashingError
        ("recovery_blob", b"\x01" + bad_keys.SerializeToString()),  # HistoryError escaped
        ("link_text", b"cipherpost://li]nk?v=1"),                  # ValueError from urllib
        ("passphrase_params", b'{"params": "3,65536,100000", "salt": "'
         + b"A" * 24 + b'"}'),                                      # HashingError later
    ]


@pytest.mark.parametrize("case", range(7))
def test_bugs_the_new_targets_found_stay_fixed(case: int) -> None:
    """Each input once broke its target's contract (docs/assurance.md lists them)."""
    name, data = _fixed_bug_inputs()[case]
    TARGETS[name].run(data)
