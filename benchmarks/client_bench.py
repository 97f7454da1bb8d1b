"""End-to-end messages per second between SDK clients through a real relay on loopback,
next to the protocol-only figure (the same number of 1:1 encrypt + decrypt calls on
in-memory stores) measured in the same run, so the cost of the client layers shows.

    .venv/bin/python benchmarks/client_bench.py            # 300 messages, about a minute
    .venv/bin/python benchmarks/client_bench.py --messages 1000

The relay runs as its own process (`python -m cipherpost.server`, SQLite in a temporary
directory); the two clients run in this process, Alice sending with ``send_text`` (which
also sends a sync copy to her own devices: she has none, so that costs nothing here) and
Bob reading over the WebSocket with ``listen`` (decrypt, store durably, acknowledge).
Alice sends over HTTP unless she is listening too (the last row), when her sends go over
her WebSocket.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from cipherpost.client import Client, ClientOptions
from cipherpost.client import events as ev
from cipherpost.client.store.crypto import TEST_PARAMS
from cipherpost.protocol import (
    IdentityKeyPair,
    InMemoryProtocolStore,
    ProtocolAddress,
    decrypt,
    encrypt,
    generate_prekey_bundle,
    process_prekey_bundle,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def protocol_only(count: int, size: int) -> float:
    """Messages per second for encrypt + decrypt alone (the floor of this benchmark)."""
    now = int(time.time())
    alice = InMemoryProtocolStore(IdentityKeyPair.generate(os.urandom), 1)
    bob = InMemoryProtocolStore(IdentityKeyPair.generate(os.urandom), 2)
    bundle = generate_prekey_bundle(bob, device_id=1, signed_pre_key_id=1, kyber_pre_key_id=1,
                                    pre_key_id=1, rng=os.urandom, now_ms=now * 1000)
    a_addr, b_addr = ProtocolAddress("alice", 1), ProtocolAddress("bob", 1)
    process_prekey_bundle(alice, b_addr, bundle, rng=os.urandom, now=now)
    first = encrypt(alice, b_addr, b"x", now=now, rng=os.urandom)
    decrypt(bob, a_addr, first.message_type, first.serialized, rng=os.urandom)
    reply = encrypt(bob, a_addr, b"y", now=now, rng=os.urandom)
    decrypt(alice, b_addr, reply.message_type, reply.serialized, rng=os.urandom)
    plaintext = os.urandom(size)
    start = time.perf_counter()
    for _ in range(count):
        message = encrypt(alice, b_addr, plaintext, now=now, rng=os.urandom)
        decrypt(bob, a_addr, message.message_type, message.serialized, rng=os.urandom)
    return count / (time.perf_counter() - start)


async def end_to_end(url: str, workdir: Path, count: int, receipts: bool,
                     sender_online: bool = False) -> float:
    """Messages per second from Alice's first send to Bob's last receipt of a message.
    With ``sender_online`` Alice listens too, so her sends go over her WebSocket."""
    options = ClientOptions(delivery_receipts=receipts)
    tag = ("r" if receipts else "n") + ("o" if sender_online else "")
    alice = await Client.register(workdir / f"alice-{tag}.db", url, username=f"alice{tag}",
                                  history=False, passphrase="bench", argon2=TEST_PARAMS,
                                  options=options)
    bob = await Client.register(workdir / f"bob-{tag}.db", url, username=f"bob{tag}",
                                history=False, passphrase="bench", argon2=TEST_PARAMS,
                                options=options)
    try:
        await alice.send_text(f"bob{tag}", "warm-up")
        await bob.receive()
        await alice.receive()
        done = asyncio.Event()
        received = 0

        async def read() -> None:
            nonlocal received
            async for event in bob.listen():
                if isinstance(event, ev.Message):
                    received += 1
                    if received == count:
                        done.set()
                        return

        async def drain_alice() -> None:
            async for _event in alice.listen():
                pass

        reader = asyncio.create_task(read())
        alice_reader = asyncio.create_task(drain_alice()) if sender_online else None
        await asyncio.sleep(0.5)  # the sockets are up and key upkeep done
        start = time.perf_counter()
        for i in range(count):
            await alice.send_text(bob.account_id, f"message {i:06d} " + "x" * 80)
        await asyncio.wait_for(done.wait(), timeout=600)
        elapsed = time.perf_counter() - start
        reader.cancel()
        if alice_reader is not None:
            alice_reader.cancel()
        return count / elapsed
    finally:
        await alice.close()
        await bob.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        port = free_port()
        env = {**os.environ, "CIPHERPOST_DATABASE_URL": f"sqlite:///{workdir}/relay.db",
               "CIPHERPOST_ATTACHMENT_DIR": str(workdir / "blobs"),
               "CIPHERPOST_RATE_MESSAGES_PER_PAIR": "1000000/100000",
               "CIPHERPOST_RATE_REGISTER_PER_IP": "1000/100",
               "CIPHERPOST_LOG_LEVEL": "WARNING"}
        proc = subprocess.Popen([sys.executable, "-m", "cipherpost.server", "--port", str(port)],
                                env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the relay did not start")
                time.sleep(0.05)
            floor = protocol_only(args.messages, 100)
            with_receipts = asyncio.run(end_to_end(url, workdir, args.messages, True))
            without = asyncio.run(end_to_end(url, workdir, args.messages, False))
            online = asyncio.run(end_to_end(url, workdir, args.messages, True, True))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    print(f"messages: {args.messages} of ~100 bytes, 1:1, one device each, loopback relay")
    print(f"protocol only (encrypt+decrypt, in-memory stores): {floor:10.0f} msg/s")
    print(f"SDK end to end, delivery receipts on:             {with_receipts:10.0f} msg/s"
          f"  ({floor / with_receipts:.0f}x slower than the protocol alone)")
    print(f"SDK end to end, delivery receipts off:            {without:10.0f} msg/s"
          f"  ({floor / without:.0f}x slower than the protocol alone)")
    print(f"SDK end to end, both listening (sends by socket): {online:10.0f} msg/s"
          f"  ({floor / online:.0f}x slower than the protocol alone)")


if __name__ == "__main__":
    main()
