"""Linking a device through a provisioning mailbox: the new device shows a link code,
an existing device sends it the account's identity, contacts and groups, encrypted so
that the relay can neither read nor replace it."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from cipherpost.client import (
    Client,
    ClientError,
    IdentityNotTrusted,
    RelayError,
    RelayUnavailable,
    archive,
)
from cipherpost.client import events as ev
from cipherpost.client.devices import (
    LinkDeclined,
    PendingCodeLink,
    request_link,
    request_link_by_code,
)
from cipherpost.client.linking import (
    CodeLinkKeys,
    LinkError,
    LinkRequest,
    check_commitment,
    commitment,
    decode_step,
    encode_step,
    new_request,
    normalize_code,
    open_envelope,
    seal,
)
from cipherpost.client.proto.app_pb2 import (
    CodeLinkMessage,
    DataMessage,
    HistoryArchivePart,
    ProvisionMessage,
)
from cipherpost.client.store.crypto import TEST_PARAMS
from cipherpost.server.archives import Archives
from cipherpost.server.provisioning import Mailboxes, Side

from .conftest import Devices, ThreadedRelay


def test_link_request_round_trip_and_tampering() -> None:
    request, private = new_request("https://relay.example", "A" * 43)
    parsed = LinkRequest.parse(request.uri())
    assert parsed == request
    sealed = seal(parsed, ProvisionMessage(account_id="acct", link_code="code"))
    assert open_envelope(request, private, sealed).link_code == "code"
    # Another secret (a relay that swapped the QR's mailbox content) or a flipped byte fail.
    other = dataclasses.replace(request, secret=bytes(16))
    with pytest.raises(LinkError):
        open_envelope(other, private, sealed)
    broken = bytearray(sealed)
    broken[-1] ^= 1
    with pytest.raises(LinkError):
        open_envelope(request, private, bytes(broken))
    for bad in ("https://example.com", "cipherpost://link?v=1&s=x", "cipherpost://link?v=2"):
        with pytest.raises(LinkError):
            LinkRequest.parse(bad)


def test_link_a_device_with_history_of_contacts_and_groups(
        tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await devices.register("alice"), await devices.register("bob")
            await alice.send_text("bob", "hi")
            await bob.receive()
            alice.trust_identity(bob.account_id, verified=True)
            group = await alice.create_group("pair", ["bob"])
            await bob.receive()

            pending = await request_link(relay.url)
            assert pending.uri.startswith("cipherpost://link?")
            joining = asyncio.create_task(pending.complete(
                tmp_path / "alice-new.db", passphrase="pw", device_name="new laptop",
                argon2=TEST_PARAMS, options=dataclasses.replace(devices.options)))
            await asyncio.sleep(0.2)
            await alice.provision(pending.uri)
            laptop = await asyncio.wait_for(joining, 30)
            devices.clients.append(laptop)
            assert laptop.account_id == alice.account_id and laptop.device_id == 2
            assert laptop.store.get_identity_key_pair().public == \
                alice.store.get_identity_key_pair().public
            # Contacts and trust came along, so did the group.
            record = laptop.store.identity_record(bob.account_id)
            assert record is not None and record.verified
            assert laptop.group(group.id) is not None
            added = [e for e in await alice.receive() if isinstance(e, ev.DeviceAdded)]
            assert added == [ev.DeviceAdded(2, "new laptop")]
            # The new device takes part at once, 1:1 and in the group.
            await bob.send_text(group.id, "to the group")
            await bob.send_text("alice", "to alice")
            got = [(e.conversation, e.text) for e in await laptop.receive()
                   if isinstance(e, ev.Message)]
            assert got == [(group.conversation, "to the group"), (bob.account_id, "to alice")]
            # A link code works once: its mailbox is gone.
            with pytest.raises(RelayError) as again:
                await alice.provision(pending.uri)
            assert again.value.status == 404
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_a_blocked_contact_stays_blocked_on_the_linked_device(
        tmp_path: Path, relay: ThreadedRelay) -> None:
    """Carol's key changed and Alice has not accepted it: a device linked now must not
    send to Carol either (the block travels with the contact)."""
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, carol = await devices.register("alice"), await devices.register("carol")
            await alice.send_text("carol", "hi")
            await carol.receive()
            await carol.reset_identity()
            with pytest.raises(IdentityNotTrusted):
                await alice.send_text("carol", "still you?")
            pending = await request_link(relay.url)
            joining = asyncio.create_task(pending.complete(
                tmp_path / "alice-new.db", passphrase="pw", argon2=TEST_PARAMS,
                options=dataclasses.replace(devices.options)))
            await asyncio.sleep(0.2)
            await alice.provision(pending.uri)
            laptop = await asyncio.wait_for(joining, 30)
            devices.clients.append(laptop)
            record = laptop.store.identity_record(carol.account_id)
            assert record is not None and record.send_blocked
            with pytest.raises(IdentityNotTrusted):
                await laptop.send_text("carol", "from the laptop")
            laptop.trust_identity(carol.account_id)
            await laptop.send_text("carol", "accepted")
            assert [e.text for e in await carol.receive() if isinstance(e, ev.Message)] == \
                ["accepted"]
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_expired_or_unknown_link_code(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        pending = await request_link(relay.url)
        pending.request = dataclasses.replace(pending.request, address="B" * 43)
        with pytest.raises(ClientError, match="expired"):
            await pending.complete(tmp_path / "x.db", passphrase="pw", argon2=TEST_PARAMS)
        assert not (tmp_path / "x.db").exists()

    asyncio.run(scenario())


# -- typed-code linking (docs/spec/linking.md, "Typed code") ----------------------------


def test_code_link_keys_and_messages() -> None:
    assert normalize_code(" abcd-efgh ") == "ABCDEFGH"
    assert normalize_code("o1il 2345") == "01112345"          # O as 0, I and L as 1
    for bad in ("ABCDEFG", "ABCDEFGHJ", "ABCD-EFGU", "ABCD!EFG", ""):
        with pytest.raises(LinkError):
            normalize_code(bad)
    new, existing = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    a, b = new.public_key().public_bytes_raw(), existing.public_key().public_bytes_raw()
    check_commitment(commitment(a), a)
    with pytest.raises(LinkError, match="committed"):
        check_commitment(commitment(a), b)
    on_new = CodeLinkKeys(new, b, new_public=a, existing_public=b, address="A" * 43)
    on_existing = CodeLinkKeys(existing, a, new_public=a, existing_public=b, address="A" * 43)
    assert on_new.sas == on_existing.sas and len(on_new.sas) == 7 and "<hidden>" in repr(on_new)
    on_existing.check_confirm(on_new.confirm_tag())
    with pytest.raises(LinkError):
        on_existing.check_confirm(bytes(32))
    sealed = on_existing.seal(ProvisionMessage(account_id="acct"))
    assert on_new.open(sealed).account_id == "acct"
    # Another mailbox, or another key on one side: another SAS, and nothing opens.
    elsewhere = CodeLinkKeys(new, b, new_public=a, existing_public=b, address="B" * 43)
    assert elsewhere.sas != on_new.sas
    swapped = CodeLinkKeys(new, b, new_public=b, existing_public=a, address="A" * 43)
    assert swapped.sas != on_new.sas                  # both keys, in their roles, count
    with pytest.raises(LinkError, match="replayed or altered"):
        elsewhere.open(sealed)
    with pytest.raises(LinkError):
        CodeLinkKeys(new, bytes(32), new_public=a, existing_public=bytes(32), address="A")
    step = encode_step("public_key", a)
    assert decode_step(step, "public_key") == a
    for data, field in ((step, "commitment"), (encode_step("public_key", a[:31]), "public_key"),
                        (b"\xff\xff", "public_key"), (encode_step("sealed", b""), "sealed")):
        with pytest.raises(LinkError):
            decode_step(data, field)
    newer = CodeLinkMessage(version=2, public_key=a).SerializeToString()
    with pytest.raises(LinkError, match="version"):
        decode_step(newer, "public_key")


class Screens:
    """The user looking at both screens: each device shows its number and waits until the
    user has seen the other's, then the user answers whether they are the same."""

    def __init__(self) -> None:
        self.shown: dict[str, str] = {}
        self._both = asyncio.Event()

    async def compare(self, device: str, number: str) -> bool:
        self.shown[device] = number
        if len(self.shown) == 2:
            self._both.set()
        await asyncio.wait_for(self._both.wait(), 30)
        return self.shown["new"] == self.shown["existing"]


async def _new_device(pending: PendingCodeLink, screens: Screens, path: Path,
                      devices: Devices) -> Client | None:
    if not await screens.compare("new", await pending.sas()):
        await pending.cancel()
        return None
    await pending.confirm()
    return await pending.complete(path, passphrase="pw", argon2=TEST_PARAMS,
                                  device_name="typed", options=dataclasses.replace(
                                      devices.options))


def _mailboxes(relay: ThreadedRelay) -> Mailboxes:
    boxes: Mailboxes = relay.server.config.app.state.relay.mailboxes
    return boxes


Rewrite = Callable[[str, str, int, bytes], bytes]


def _intercept(monkeypatch: pytest.MonkeyPatch, relay: ThreadedRelay,
               rewrite: Rewrite) -> list[tuple[str, int, bytes]]:
    """The relay rewrites what goes through code mailboxes; what it passed on is listed."""
    boxes = _mailboxes(relay)
    original = boxes.send
    passed: list[tuple[str, int, bytes]] = []

    def send(address: str, side: Side, index: int, message: bytes, now_ms: int,
             claimer: tuple[str, int] | None = None) -> None:
        message = rewrite(address, side, index, message)
        passed.append((side, index, message))
        original(address, side, index, message, now_ms, claimer)

    monkeypatch.setattr(boxes, "send", send)
    return passed


def test_link_by_typed_code(tmp_path: Path, relay: ThreadedRelay) -> None:
    """No camera: the code is typed, both screens show the same number, the user confirms
    on both, and the new device gets the identity, contacts, groups and history. A wrong
    code changes nothing; the code works once."""
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        devices.history = True
        try:
            alice, bob = await devices.register("alice"), await devices.register("bob")
            await alice.send_text("bob", "before the link")
            await bob.receive()
            await bob.send_text("alice", "an answer")
            await alice.receive()
            alice.trust_identity(bob.account_id, verified=True)
            group = await alice.create_group("pair", ["bob"])
            await bob.receive()

            pending = await request_link_by_code(relay.url)
            assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}", pending.code)
            assert pending.code[2:] not in repr(pending)
            wrong = ("1" if pending.code[0] != "1" else "2") + pending.code[1:]
            with pytest.raises(ClientError, match="no new device is waiting"):
                await alice.provision_by_code(wrong, confirm=lambda _sas: True)
            with pytest.raises(ClientError):
                await pending.complete(tmp_path / "early.db", passphrase="pw")  # not yet

            screens = Screens()
            joining = asyncio.create_task(_new_device(pending, screens,
                                                      tmp_path / "alice-typed.db", devices))
            await alice.provision_by_code(pending.code.lower(),
                                          confirm=lambda n: screens.compare("existing", n))
            laptop = await asyncio.wait_for(joining, 30)
            assert laptop is not None
            devices.clients.append(laptop)
            assert re.fullmatch(r"\d{3} \d{3}", screens.shown["new"])
            assert laptop.account_id == alice.account_id and laptop.device_id == 2
            assert laptop.store.get_identity_key_pair().public == \
                alice.store.get_identity_key_pair().public
            record = laptop.store.identity_record(bob.account_id)
            assert record is not None and record.verified
            assert laptop.group(group.id) is not None
            texts = [DataMessage.FromString(m.body).text
                     for m in laptop.store.messages(bob.account_id)]
            assert texts == ["before the link", "an answer"]
            assert len(_mailboxes(relay)) == 0                       # closed when done
            # The code worked once.
            with pytest.raises(ClientError, match="no new device is waiting"):
                await alice.provision_by_code(pending.code, confirm=lambda _sas: True)
            await bob.send_text("alice", "to both")
            assert [e.text for e in await laptop.receive() if isinstance(e, ev.Message)] == \
                ["to both"]
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_a_relay_in_the_middle_shows_two_numbers_and_links_nothing(
        tmp_path: Path, relay: ThreadedRelay, monkeypatch: pytest.MonkeyPatch) -> None:
    """The relay runs the exchange with each side under its own keys, committing and
    revealing correctly and even re-making the confirmation: the two screens show different
    numbers, the users say so, and the identity never leaves the existing device."""
    m1, m2 = X25519PrivateKey.generate(), X25519PrivateKey.generate()  # to E, to N
    p1, p2 = (k.public_key().public_bytes_raw() for k in (m1, m2))
    seen: dict[str, bytes] = {}

    def rewrite(address: str, side: str, index: int, message: bytes) -> bytes:
        if (side, index) == ("new", 0):
            return encode_step("commitment", commitment(p1))
        if (side, index) == ("existing", 0):
            seen["B"] = decode_step(message, "public_key")
            return encode_step("public_key", p2)
        if (side, index) == ("new", 1):
            seen["A"] = decode_step(message, "public_key")
            seen["address"] = address.encode()
            return encode_step("public_key", p1)
        if (side, index) == ("new", 2):
            towards_e = CodeLinkKeys(m1, seen["B"], new_public=p1, existing_public=seen["B"],
                                     address=address)
            return encode_step("confirm", towards_e.confirm_tag())
        return message

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice = await devices.register("alice")
            passed = _intercept(monkeypatch, relay, rewrite)
            pending = await request_link_by_code(relay.url)
            screens = Screens()
            joining = asyncio.create_task(_new_device(pending, screens,
                                                      tmp_path / "alice-mitm.db", devices))
            with pytest.raises(LinkDeclined):
                await alice.provision_by_code(pending.code, timeout=10,
                                              confirm=lambda n: screens.compare("existing", n))
            assert await asyncio.wait_for(joining, 30) is None
            # The relay was in the middle: each screen shows the number of its half.
            address = seen["address"].decode()
            on_n = CodeLinkKeys(m2, seen["A"], new_public=seen["A"], existing_public=p2,
                                address=address)
            on_e = CodeLinkKeys(m1, seen["B"], new_public=p1, existing_public=seen["B"],
                                address=address)
            assert screens.shown == {"new": on_n.sas, "existing": on_e.sas}
            assert on_n.sas != on_e.sas
            assert ("existing", 1) not in [(s, i) for s, i, _m in passed]   # nothing sealed
            assert [d["device_id"] for d in await alice.api.devices()] == [1]
            assert not (tmp_path / "alice-mitm.db").exists()
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_a_key_swapped_after_the_commitment_is_refused(
        tmp_path: Path, relay: ThreadedRelay, monkeypatch: pytest.MonkeyPatch) -> None:
    """A relay that replaces the revealed key (to pick one that makes the numbers agree)
    no longer matches the commitment: the existing device stops before asking the user."""
    grinder = X25519PrivateKey.generate().public_key().public_bytes_raw()

    def rewrite(address: str, side: str, index: int, message: bytes) -> bytes:
        return encode_step("public_key", grinder) if (side, index) == ("new", 1) else message

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice = await devices.register("alice")
            passed = _intercept(monkeypatch, relay, rewrite)
            pending = await request_link_by_code(relay.url)
            asked: list[str] = []
            sas = asyncio.create_task(pending.sas())
            with pytest.raises(LinkError, match="committed"):
                await alice.provision_by_code(pending.code, timeout=10,
                                              confirm=lambda n: asked.append(n) is None)
            await sas
            await pending.cancel()
            assert asked == [] and ("existing", 1) not in [(s, i) for s, i, _m in passed]
            assert [d["device_id"] for d in await alice.api.devices()] == [1]
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_a_replayed_provisioning_message_links_nothing(
        tmp_path: Path, relay: ThreadedRelay, monkeypatch: pytest.MonkeyPatch) -> None:
    """The relay keeps the sealed message of one typed-code link and hands it to the next:
    it does not open there (its keys came from another exchange), and nothing is linked."""
    kept: list[bytes] = []

    def rewrite(address: str, side: str, index: int, message: bytes) -> bytes:
        if (side, index) == ("existing", 1):
            kept.append(message)
            return kept[0]
        return message

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice = await devices.register("alice")
            _intercept(monkeypatch, relay, rewrite)
            for n, expect_linked in ((1, True), (2, False)):
                pending = await request_link_by_code(relay.url)
                screens = Screens()
                joining = asyncio.create_task(_new_device(
                    pending, screens, tmp_path / f"typed-{n}.db", devices))
                await alice.provision_by_code(pending.code,
                                              confirm=lambda s: screens.compare("existing", s))
                if expect_linked:
                    linked = await asyncio.wait_for(joining, 30)
                    assert linked is not None
                    devices.clients.append(linked)
                else:
                    with pytest.raises(LinkError, match="replayed or altered"):
                        await asyncio.wait_for(joining, 30)
            assert len(kept) == 2 and kept[0] != kept[1]
            assert [d["device_id"] for d in await alice.api.devices()] == [1, 2]
            assert not (tmp_path / "typed-2.db").exists()
            assert len(_mailboxes(relay)) == 0
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_an_expired_typed_code(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice = await devices.register("alice")
            pending = await request_link_by_code(relay.url)
            # Ten minutes later (nobody waits on the mailbox yet, so this thread may).
            _mailboxes(relay).expire(pending.expires_at)
            with pytest.raises(ClientError, match="no new device is waiting"):
                await alice.provision_by_code(pending.code, confirm=lambda _sas: True)
            with pytest.raises(ClientError, match="expired"):
                await pending.sas(timeout=5)
            await pending.cancel()
            assert [d["device_id"] for d in await alice.api.devices()] == [1]
        finally:
            await devices.close()

    asyncio.run(scenario())


# -- the one-time archive when the account keeps no server history ----------------------


def test_without_server_history_the_linked_device_gets_a_one_time_archive(
        tmp_path: Path, relay: ThreadedRelay, monkeypatch: pytest.MonkeyPatch) -> None:
    """History off: linking carries the conversations in a sealed archive of several parts;
    cut off after the first part, the new device resumes where it stopped, ends with every
    message once, and the relay holds nothing of the archive afterwards."""
    monkeypatch.setattr(archive, "PART_BYTES", 200)      # a few parts even for a short chat
    original = archive.open_part
    opened: list[int] = []

    def flaky_open(key: bytes, index: int, count: int, blob: bytes) -> HistoryArchivePart:
        opened.append(index)
        if opened.count(1) == 1 and index == 1:
            raise RelayUnavailable("the connection dropped")
        return original(key, index, count, blob)

    monkeypatch.setattr(archive, "open_part", flaky_open)
    archives = Archives(tmp_path / "relay" / "blobs" / "archives")

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        assert not devices.history
        try:
            alice, bob = await devices.register("alice"), await devices.register("bob")
            for n in range(6):
                await alice.send_text("bob", f"from alice {n}")
                await bob.receive()
                await bob.send_text("alice", f"from bob {n}")
                await alice.receive()
            first = alice.store.messages(bob.account_id)[0]
            await alice.react("bob", (first.author, first.timestamp), "👍")
            mine = [m for m in alice.store.messages(bob.account_id) if m.outgoing][1]
            await alice.edit("bob", mine.timestamp, "from alice 1, edited")
            expected = [DataMessage.FromString(m.body).text
                        for m in alice.store.messages(bob.account_id)]
            assert "from alice 1, edited" in expected

            pending = await request_link(relay.url)
            path = tmp_path / "alice-archive.db"
            seen: list[tuple[int, int]] = []
            joining = asyncio.create_task(pending.complete(
                path, passphrase="pw", argon2=TEST_PARAMS,
                options=dataclasses.replace(devices.options)))
            await asyncio.sleep(0.2)
            await alice.provision(pending.uri)
            with pytest.raises(RelayUnavailable):
                await asyncio.wait_for(joining, 30)
            assert archives.count() > 0                  # the rest waits on the relay
            laptop = await Client.open(path, passphrase="pw")
            devices.clients.append(laptop)
            await laptop.receive_link_archive(progress=lambda d, t: seen.append((d, t)))
            texts = [DataMessage.FromString(m.body).text
                     for m in laptop.store.messages(bob.account_id)]
            assert texts == expected and len(texts) == 12            # each once
            # the edited one under its own name, not the edit's (an edit names the message)
            assert [(m.author, m.timestamp) for m in laptop.store.messages(bob.account_id)] \
                == [(m.author, m.timestamp) for m in alice.store.messages(bob.account_id)]
            assert laptop.store.reactions(first.author, first.timestamp) == \
                {alice.account_id: "👍"}
            assert max(opened) >= 2 and opened.count(0) == 1           # not taken twice
            assert seen and seen[-1][1] == 14            # 12 messages, the edit, the reaction
            assert archives.count() == 0                               # gone from the relay
            assert await laptop.receive_link_archive() == 0            # nothing left
        finally:
            await devices.close()

    asyncio.run(scenario())
