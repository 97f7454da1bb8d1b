"""History that follows the user (docs/spec/history.md): a linked or restored device
shows the conversations, a removed device cannot read what is written after, the relay
stores only sealed entries, and turning history off deletes them."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from cipherpost.client import Client, ClientError, RelayError, RelayUnavailable, history
from cipherpost.client import events as ev
from cipherpost.client.devices import request_link
from cipherpost.client.export import ExportError, export_account, import_account, read_export
from cipherpost.client.recovery import (
    RECOVERY_SECRET,
    RecoveryKeyError,
    Secrets,
    WeakPassphrase,
    format_key,
    parse_key,
    restore,
    restore_with_passphrase,
    set_passphrase,
    update_blob,
)
from cipherpost.client.store.crypto import TEST_PARAMS

from .conftest import Devices, ThreadedRelay, logged_events

CANARIES = ["canary-7d1f history plaintext", "canary-edit-91c2", "canary-group-55ae"]


def view(client: Client, conversation: str) -> list[tuple[str, str]]:
    return [(h.author, h.text) for h in client.history(conversation, limit=1000)]


def full_view(client: Client, conversation: str) -> list[tuple[str, int, str, dict[str, str]]]:
    """Each message's author, timestamp (its name), text and reactions."""
    return [(h.author, h.timestamp, h.text, client.store.reactions(h.author, h.timestamp))
            for h in client.history(conversation, limit=1000)]


async def link(devices: Devices, owner: Client, name: str, tmp_path: Path,
               **complete: Any) -> Client:
    pending = await request_link(devices.relay.url)
    joining = asyncio.create_task(pending.complete(
        tmp_path / f"{name}.db", passphrase="pw", argon2=TEST_PARAMS, device_name=name,
        options=dataclasses.replace(devices.options), **complete))
    await asyncio.sleep(0.2)
    await owner.provision(pending.uri)
    client = await asyncio.wait_for(joining, 30)
    devices.clients.append(client)
    return client


async def conversation(alice: Client, bob: Client) -> bytes:
    """1:1 and group messages, an edit, a reaction, a delete for everyone."""
    await alice.send_text("bob", CANARIES[0])
    hi = await bob.send_text("alice", "hi alice")
    gone = await bob.send_text("alice", "this one is deleted")
    first = await alice.send_text("bob", "tpyo")
    await alice.receive()
    await alice.edit("bob", first, CANARIES[1])
    await alice.react("bob", (bob.account_id, hi), "+1")
    await bob.delete_for_everyone("alice", gone)
    group = await alice.create_group("trip", ["bob"])
    await bob.receive()
    await bob.send_text(group.id, CANARIES[2])
    await alice.receive()
    return group.id


def test_a_linked_device_shows_the_whole_history(tmp_path: Path,
                                                 relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            devices.history = True
            alice = await devices.register("alice")
            devices.history = False
            bob = await devices.register("bob")
            group_id = await conversation(alice, bob)
            assert alice.store.history_pending(10) == []          # all uploaded
            seen: list[int] = []
            laptop = await link(devices, alice, "laptop", tmp_path, progress=seen.append)
            assert seen and seen[-1] > 0
            assert view(laptop, bob.account_id) == view(alice, bob.account_id)
            texts = [t for _, t in view(laptop, bob.account_id)]
            assert CANARIES[1] in texts and "tpyo" not in texts
            assert "this one is deleted" not in texts
            group = laptop.group(group_id)
            assert group is not None and group.title == "trip"
            assert view(laptop, group.conversation) == view(alice, group.conversation)
            # New messages reach both, and what the laptop stores is uploaded once.
            await bob.send_text("alice", "after the link")
            await alice.receive()
            await laptop.receive()
            fresh = await laptop.sync_history()
            assert fresh.messages == 0 and fresh.known >= 1    # known already
            # The relay holds sealed entries only.
            stored = (tmp_path / "relay" / "relay.db").read_bytes()
            wal = tmp_path / "relay" / "relay.db-wal"
            if wal.exists():
                stored += wal.read_bytes()
            for canary in [*CANARIES, "hi alice"]:
                assert canary.encode() not in stored
        finally:
            await devices.close()

    asyncio.run(scenario())


async def logged(client: Client) -> list[Any]:
    """The live entries of the account's history log, opened with ``client``'s keys."""
    return [event for event in await logged_events(client) if event is not None]


def test_a_deleted_message_takes_its_edits_and_reactions_out_of_the_log(
        tmp_path: Path, relay: ThreadedRelay) -> None:
    """An edit's entry holds the new text: it must not outlive the message it edits in the
    server history (nor a reaction's), on the device that recorded it or on one that
    only replayed it. A reaction's entry goes when its reactor reacts anew."""
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            devices.history = True
            alice = await devices.register("alice")
            devices.history = False
            bob = await devices.register("bob")
            sent = await bob.send_text("alice", "first words")
            kept = await bob.send_text("alice", "stays")
            await alice.receive()
            await bob.edit("alice", sent, "canary-edited-4b1e")
            await alice.react("bob", (bob.account_id, sent), "+1")
            await alice.react("bob", (bob.account_id, kept), "+1")
            await alice.receive()
            await alice.sync_history()
            laptop = await link(devices, alice, "laptop", tmp_path)  # replays the changes

            def about(entries: list[Any], timestamp: int) -> list[str]:
                out = []
                for event in entries:
                    kind = event.WhichOneof("body")
                    data = getattr(event, kind).data if kind in ("message", "change") \
                        else None
                    if data is None:
                        continue
                    if kind == "message" and data.timestamp == timestamp:
                        out.append("message")
                    elif data.HasField("edit") and data.edit.timestamp == timestamp:
                        out.append("edit")
                    elif data.HasField("reaction") and \
                            data.reaction.target.timestamp == timestamp:
                        out.append("reaction")
                return sorted(out)

            assert about(await logged(alice), sent) == ["edit", "message", "reaction"]
            await bob.delete_for_everyone("alice", sent)
            await laptop.receive()   # the laptop deletes first: it only replayed the changes
            await laptop.sync_history()
            left = await logged(alice)
            assert about(left, sent) == []
            assert about(left, kept) == ["message", "reaction"]  # the other message's stay
            await alice.receive()
            await alice.sync_history()
            assert about(await logged(alice), kept) == ["message", "reaction"]
            assert [t for _, t in view(alice, bob.account_id)] == ["stays"]

            # A new reaction replaces the reactor's earlier one in the log too: on the
            # device that made it, and on one that only replayed or received the earlier.
            await alice.react("bob", (bob.account_id, kept), "\N{PARTY POPPER}")
            await alice.sync_history()
            assert about(await logged(alice), kept) == ["message", "reaction"]
            await laptop.receive()
            await laptop.react("bob", (bob.account_id, kept), "\N{THUMBS UP SIGN}")
            await laptop.sync_history()
            left = [e for e in await logged(alice) if e is not None
                    and e.WhichOneof("body") == "change" and e.change.data.HasField("reaction")
                    and e.change.data.reaction.target.timestamp == kept]
            assert [e.change.data.reaction.emoji for e in left] == ["\N{THUMBS UP SIGN}"]
            # the replaced reaction's deleted entry takes only the reaction, not the message,
            # on a device that reads the log before the newer reaction reaches it
            await alice.sync_history()
            assert [t for _, t in view(alice, bob.account_id)] == ["stays"]
            await alice.receive()
            assert alice.store.reactions(bob.account_id, kept) == {
                alice.account_id: "\N{THUMBS UP SIGN}"}
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_restore_from_the_recovery_key(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            devices.history = True
            alice = await devices.register("alice")
            devices.history = False
            bob = await devices.register("bob")
            await conversation(alice, bob)
            number = bob.safety_number(alice.account_id).displayable
            key = await alice.create_recovery_key()
            assert parse_key(key) and len(key.replace(" ", "")) == 56
            typo = key[:-1] + ("0" if key[-1] != "0" else "1")
            with pytest.raises(RecoveryKeyError):
                await restore(tmp_path / "x.db", relay.url, typo, passphrase="pw",
                              argon2=TEST_PARAMS)
            with pytest.raises(ClientError, match="no account"):
                await restore(tmp_path / "y.db", relay.url, format_key(bytes(32)),
                              passphrase="pw", argon2=TEST_PARAMS)
            assert not (tmp_path / "y.db").exists()
            # The old machine is lost; a fresh one gets the account back.
            restored = await restore(tmp_path / "new.db", relay.url, key.lower(),
                                     passphrase="pw", argon2=TEST_PARAMS,
                                     options=dataclasses.replace(devices.options))
            devices.clients.append(restored)
            assert restored.account_id == alice.account_id and restored.device_id != 1
            assert restored.store.get_identity_key_pair().public == \
                alice.store.get_identity_key_pair().public
            assert view(restored, bob.account_id) == view(alice, bob.account_id)
            assert bob.safety_number(alice.account_id).displayable == number  # no change
            record = restored.store.identity_record(bob.account_id)
            assert record is not None
            await bob.send_text("alice", "welcome back")
            got = await restored.receive()
            assert [e.text for e in got if isinstance(e, ev.Message)] == ["welcome back"]
            assert not any(isinstance(e, ev.IdentityChanged) for e in await bob.receive())
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_a_removed_device_cannot_read_what_is_written_after(
        tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            devices.history = True
            alice = await devices.register("alice")
            devices.history = False
            await devices.register("bob")
            laptop = await link(devices, alice, "laptop", tmp_path)
            await alice.send_text("bob", "before the removal")
            stolen = history.keys(laptop.store)          # what the removed laptop holds
            assert stolen is not None
            await alice.remove_device(laptop.device_id)
            await alice.send_text("bob", "after the removal")
            page = await alice.api.request("GET", "/v1/history")
            opened: list[str] = []
            for entry in page["entries"]:
                blob = base64.b64decode(entry["blob"])
                name = bytes.fromhex(entry["event_id"])
                assert history.open_blob(history.keys(alice.store), name, blob)  # type: ignore[arg-type]
                try:
                    event = history.open_blob(stolen, name, blob)
                except history.HistoryError:
                    continue
                opened.append(event.message.data.text)
            assert opened == ["before the removal"]
            current = history.keys(alice.store)
            assert current is not None and current.current != stolen.current
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_history_off_deletes_the_server_copy_and_every_device_follows(
        tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            devices.history = True
            alice = await devices.register("alice")
            devices.history = False
            bob = await devices.register("bob")
            laptop = await link(devices, alice, "laptop", tmp_path)
            await alice.send_text("bob", "kept for a while")
            assert (await alice.api.request("GET", "/v1/history"))["entries"]
            await alice.set_server_history(False)
            assert (await alice.api.request("GET", "/v1/history"))["entries"] == []
            got = await laptop.receive()
            assert ev.ServerHistoryChanged(enabled=False) in got
            assert not laptop.server_history
            await bob.send_text("alice", "not kept")
            await laptop.receive()
            await alice.receive()
            assert (await alice.api.request("GET", "/v1/history"))["entries"] == []
            # On again: this device's messages go up (backfill), the laptop follows.
            await alice.set_server_history(True)
            texts = {history.open_blob(history.keys(alice.store),  # type: ignore[arg-type]
                                       bytes.fromhex(e["event_id"]),
                                       base64.b64decode(e["blob"])).message.data.text
                     for e in (await alice.api.request("GET", "/v1/history"))["entries"]}
            assert {"kept for a while", "not kept"} <= texts
            assert ev.ServerHistoryChanged(enabled=True) in await laptop.receive()
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_history_turned_on_by_a_device_without_recovery_secrets_reaches_the_blob(
        tmp_path: Path, relay: ThreadedRelay) -> None:
    """The recovery key was made on alice's first device; a linked device (which holds
    no recovery secrets, like the browser) turns server history on: the first device
    seals the blob again when it hears of it, so a restore keeps history on, with the
    account's keys, and replays what the linked device stored, edits and reactions too."""
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice = await devices.register("alice")
            bob = await devices.register("bob")
            laptop = await link(devices, alice, "laptop", tmp_path)
            key = await alice.create_recovery_key()
            draft = await laptop.send_text("bob", "stored by the laptop, first draft")
            await laptop.edit("bob", draft, "stored by the laptop")
            answer = await bob.send_text("alice", "bob's answer")
            await laptop.receive()
            await laptop.react("bob", (bob.account_id, answer), "👍")
            await laptop.set_server_history(True)
            assert ev.ServerHistoryChanged(enabled=True) in await alice.receive()
            restored = await restore(tmp_path / "new.db", relay.url, key, passphrase="pw",
                                     argon2=TEST_PARAMS,
                                     options=dataclasses.replace(devices.options))
            devices.clients.append(restored)
            assert restored.server_history
            held, theirs = history.keys(restored.store), history.keys(laptop.store)
            assert held is not None and theirs is not None and held.id_key == theirs.id_key
            # the laptop's messages, its edit (under the message's timestamp) and its reaction
            assert full_view(restored, bob.account_id) == [
                (alice.account_id, draft, "stored by the laptop", {}),
                (bob.account_id, answer, "bob's answer", {alice.account_id: "👍"})]
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_a_reseal_never_brings_back_a_recovery_secret_another_device_replaced(
        tmp_path: Path, relay: ThreadedRelay) -> None:
    """Alice made a recovery key and a passphrase on her first device; later she replaces
    both on her laptop (the first ones leaked). When the laptop turns server history on,
    the first device seals the blobs again: the relay refuses to take its old secrets
    back (409 ``recovery_changed``) and the device forgets them. The new key and
    passphrase restore the account; the old ones stay refused."""
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice = await devices.register("alice")
            laptop = await link(devices, alice, "laptop", tmp_path)
            old_key = await alice.create_recovery_key()
            old_phrase = "correct horse battery staple under a violet moon"
            new_phrase = "seven quiet herons fold the amber ledger at dusk"
            await set_passphrase(alice, old_phrase, params=TEST_PARAMS)
            new_key = await laptop.create_recovery_key()
            await set_passphrase(laptop, new_phrase, params=TEST_PARAMS)
            await laptop.set_server_history(True)
            assert ev.ServerHistoryChanged(enabled=True) in await alice.receive()
            assert alice.store.get_secret(RECOVERY_SECRET) is None
            assert await update_blob(alice) is False  # nothing left to seal again
            for n, (key, ok) in enumerate(((old_key, False), (new_key, True))):
                if not ok:
                    with pytest.raises(ClientError, match="no account for that recovery key"):
                        await restore(tmp_path / f"k{n}.db", relay.url, key, passphrase="pw",
                                      argon2=TEST_PARAMS)
                    continue
                restored = await restore(tmp_path / f"k{n}.db", relay.url, key, passphrase="pw",
                                         argon2=TEST_PARAMS,
                                         options=dataclasses.replace(devices.options))
                devices.clients.append(restored)
                assert restored.account_id == alice.account_id and restored.server_history
            with pytest.raises(ClientError, match="wrong username or recovery passphrase"):
                await restore_with_passphrase(tmp_path / "p0.db", relay.url, "alice", old_phrase,
                                              passphrase="pw", argon2=TEST_PARAMS,
                                              min_params=TEST_PARAMS)
            again = await restore_with_passphrase(
                tmp_path / "p1.db", relay.url, "alice", new_phrase, passphrase="pw",
                argon2=TEST_PARAMS, min_params=TEST_PARAMS,
                options=dataclasses.replace(devices.options))
            devices.clients.append(again)
            assert again.account_id == alice.account_id
            # A reseal under a secret the relay does not hold changes nothing.
            with pytest.raises(RelayError) as refused:
                await alice.api.request("PUT", "/v1/recovery", json={
                    "lookup_id": base64.b64encode(bytes(16)).decode(),
                    "auth": base64.b64encode(bytes(32)).decode(),
                    "blob": base64.b64encode(b"x" * 64).decode(), "reseal": True})
            assert (refused.value.status, refused.value.code) == (409, "recovery_changed")
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_uploads_interrupted_resume_without_loss_or_duplicates(
        tmp_path: Path, relay: ThreadedRelay, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            devices.history = True
            alice = await devices.register("alice")
            devices.history = False
            bob = await devices.register("bob")
            real = alice.api.request
            calls = [0]

            async def flaky(method: str, path: str, **kw: Any) -> Any:
                if path.startswith("/v1/history/"):
                    calls[0] += 1
                    if calls[0] % 2 == 0:
                        raise RelayUnavailable("connection reset")
                return await real(method, path, **kw)

            monkeypatch.setattr(alice.api, "request", flaky)
            for n in range(6):
                await alice.send_text("bob", f"m{n}")
            assert alice.store.history_pending(100)          # some waiting
            monkeypatch.setattr(alice.api, "request", real)
            await alice.receive()                            # flushes what is left
            assert alice.store.history_pending(100) == []
            page = await alice.api.request("GET", "/v1/history")
            assert len(page["entries"]) == 6
            assert bob.account_id
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_a_new_epoch_every_thirty_days(tmp_path: Path, relay: ThreadedRelay) -> None:
    now = [1_800_000_000_000]

    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        devices.options.clock = lambda: now[0]
        try:
            devices.history = True
            alice = await devices.register("alice")
            laptop = await link(devices, alice, "laptop", tmp_path)
            first = history.keys(alice.store)
            assert first is not None
            now[0] += history.EPOCH_MS
            await alice.receive()
            second = history.keys(alice.store)
            assert second is not None and second.current != first.current
            assert set(first.epochs) < set(second.epochs)     # old keys kept for old entries
            await laptop.receive()
            held = history.keys(laptop.store)
            assert held is not None and held.current == second.current
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_recovery_key_format() -> None:
    key = bytes(range(32))
    text = format_key(key)
    assert len(text.split()) == 14 and all(len(g) == 4 for g in text.split())
    assert parse_key(text) == key
    assert parse_key(text.lower().replace(" ", "-")) == key
    assert parse_key(text.replace("0", "O").replace("1", "I")) == key
    for bad in ("", text[:-5], text + "A", text.replace(text[5], "U", 1)):
        with pytest.raises(RecoveryKeyError):
            parse_key(bad)


def test_recovery_secrets_must_be_80_bytes() -> None:
    secrets = Secrets.derive(bytes(32))
    assert Secrets.from_bytes(secrets.to_bytes()).to_bytes() == secrets.to_bytes()
    for bad in (b"", secrets.to_bytes()[:79], secrets.to_bytes() + b"x"):
        with pytest.raises(ClientError):
            Secrets.from_bytes(bad)


def test_restore_with_the_recovery_passphrase(tmp_path: Path, relay: ThreadedRelay) -> None:
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            devices.history = True
            alice = await devices.register("alice")
            devices.history = False
            bob = await devices.register("bob")
            await alice.send_text("bob", "kept through the passphrase")
            with pytest.raises(WeakPassphrase):
                await set_passphrase(alice, "alice123", params=TEST_PARAMS)
            strong = "correct horse battery staple under a violet moon"
            await set_passphrase(alice, strong, params=TEST_PARAMS)
            # A relay that asks for hashing weaker than the floor is refused outright.
            with pytest.raises(ClientError, match="weaker"):
                await restore_with_passphrase(tmp_path / "weak.db", relay.url, "alice",
                                              strong, passphrase="pw", argon2=TEST_PARAMS)
            with pytest.raises(ClientError, match="wrong username or recovery passphrase"):
                await restore_with_passphrase(tmp_path / "bad.db", relay.url, "alice",
                                              strong + "!", passphrase="pw",
                                              argon2=TEST_PARAMS, min_params=TEST_PARAMS)
            with pytest.raises(ClientError, match="no recovery passphrase"):
                await restore_with_passphrase(tmp_path / "none.db", relay.url, "bob", strong,
                                              passphrase="pw", argon2=TEST_PARAMS,
                                              min_params=TEST_PARAMS)
            restored = await restore_with_passphrase(
                tmp_path / "new.db", relay.url, "alice", strong, passphrase="pw",
                argon2=TEST_PARAMS, min_params=TEST_PARAMS,
                options=dataclasses.replace(devices.options))
            devices.clients.append(restored)
            assert restored.account_id == alice.account_id
            assert view(restored, bob.account_id) == view(alice, bob.account_id)
            # A new epoch reseals the passphrase blob too: a later restore reads new entries.
            await alice.rotate_history_epoch()
            await alice.send_text("bob", "after a new epoch")
            again = await restore_with_passphrase(
                tmp_path / "again.db", relay.url, "alice", strong, passphrase="pw",
                argon2=TEST_PARAMS, min_params=TEST_PARAMS,
                options=dataclasses.replace(devices.options))
            devices.clients.append(again)
            assert [t for _, t in view(again, bob.account_id)] == [
                "kept through the passphrase", "after a new epoch"]
        finally:
            await devices.close()

    asyncio.run(scenario())


def test_local_encrypted_export_and_import(tmp_path: Path, relay: ThreadedRelay) -> None:
    """With history kept on devices only, an export file carries the account and its
    conversations to a new machine; the file is refused when damaged, truncated or
    opened with the wrong passphrase."""
    async def scenario() -> None:
        devices = Devices(tmp_path, relay)
        try:
            alice, bob = await devices.register("alice"), await devices.register("bob")
            group_id = await conversation(alice, bob)
            target = tmp_path / "alice.cpexport"
            with pytest.raises(ClientError, match="recovery key first"):
                export_account(alice, target, "export pass", with_history=True,
                               params=TEST_PARAMS)
            await alice.create_recovery_key()
            steps: list[tuple[int, int]] = []
            count = export_account(alice, target, "export pass", with_history=True,
                                   params=TEST_PARAMS, progress=lambda d, t: steps.append((d, t)))
            assert count > 5 and steps[-1] == (count, count)
            raw = target.read_bytes()
            for canary in CANARIES:
                assert canary.encode() not in raw
            with pytest.raises(ExportError, match="wrong passphrase"):
                read_export(target, "not it")
            for name, damaged in (("cut", raw[:-10]), ("flipped", raw[:60] + bytes(
                    [raw[60] ^ 1]) + raw[61:]), ("extended", raw + b"x"),
                    ("foreign", b"PK\x03\x04" + raw[4:])):
                bad = tmp_path / name
                bad.write_bytes(damaged)
                with pytest.raises(ExportError):
                    read_export(bad, "export pass")
            imported = await import_account(target, tmp_path / "moved.db", relay.url,
                                            "export pass", passphrase="pw",
                                            argon2=TEST_PARAMS,
                                            options=dataclasses.replace(devices.options))
            devices.clients.append(imported)
            assert imported.account_id == alice.account_id
            # the edited message under its own timestamp, and the reaction on bob's message
            held = full_view(alice, bob.account_id)
            assert CANARIES[1] in [text for _, _, text, _ in held]
            assert {alice.account_id: "+1"} in [reactions for _, _, _, reactions in held]
            assert full_view(imported, bob.account_id) == held
            group = imported.group(group_id)
            assert group is not None
            assert full_view(imported, group.conversation) == full_view(alice, group.conversation)
            # Keys only: the account, no conversations.
            keys_only = tmp_path / "keys.cpexport"
            export_account(alice, keys_only, "export pass", with_history=False,
                           params=TEST_PARAMS)
            assert len(read_export(keys_only, "export pass")) == 2
        finally:
            await devices.close()

    asyncio.run(scenario())
