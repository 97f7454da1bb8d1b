"""Group state and signed changes (docs/spec/groups.md): pure functions, no I/O.

A group's state lives only on its members' devices. Every change is signed by its author
with the account's identity key; a member accepts a change only when it follows the
state it holds and its author was allowed to make it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from cipherpost.protocol import IdentityKeyPair, PublicKey, Random, xeddsa

from .content import InvalidContent, check_integers
from .proto.app_pb2 import GroupChange, GroupState, SignedGroupChange

CHANGE_CONTEXT = b"Cipherpost group change v1"
ADMIN = GroupState.ROLE_ADMIN
MEMBER = GroupState.ROLE_MEMBER
GROUP_ID_BYTES = 32


class GroupChangeRejected(Exception):
    """A group change that does not verify or is not allowed; the state is unchanged."""


@dataclass(frozen=True)
class Group:
    """A group state as accepted, with the exact bytes it was accepted as."""

    id: bytes
    revision: int
    title: str
    members: Mapping[str, int]
    expire_timer: int
    attributes_by_admins_only: bool
    state_bytes: bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> Group:
        """Raises: GroupChangeRejected when ``data`` is not a valid GroupState."""
        try:
            state = GroupState.FromString(data)
            check_integers(state)
        except (DecodeError, InvalidContent):
            raise GroupChangeRejected("malformed group state") from None
        members: dict[str, int] = {}
        for member in state.members:
            if not member.account_id or member.account_id in members:
                raise GroupChangeRejected("malformed member list")
            members[member.account_id] = member.role
        if len(state.id) != GROUP_ID_BYTES:
            raise GroupChangeRejected("a group id is 32 bytes")
        return cls(state.id, state.revision, state.title, members, state.expire_timer,
                   state.attributes_by_admins_only, data)

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.state_bytes).digest()

    @property
    def conversation(self) -> str:
        """The conversation key of this group in the local history."""
        return conversation_id(self.id)

    def is_admin(self, account: str) -> bool:
        return self.members.get(account) == ADMIN

    def is_member(self, account: str) -> bool:
        return account in self.members


def conversation_id(group_id: bytes) -> str:
    return "group:" + group_id.hex()


def encode_state(group_id: bytes, revision: int, title: str, members: Mapping[str, int], *,
                 expire_timer: int = 0, attributes_by_admins_only: bool = False) -> bytes:
    """A serialized GroupState (members in account-id order, so every member that builds
    the same state builds the same bytes)."""
    state = GroupState(id=group_id, revision=revision, title=title, expire_timer=expire_timer,
                       attributes_by_admins_only=attributes_by_admins_only)
    for account in sorted(members):
        state.members.add(account_id=account, role=members[account])
    return state.SerializeToString()


def sign_change(identity: IdentityKeyPair, author: str, previous: Group | None,
                new_state: bytes, timestamp: int, rng: Random) -> SignedGroupChange:
    """Sign the change from ``previous`` (None at creation) to ``new_state``."""
    group = Group.from_bytes(new_state)
    change = GroupChange(group_id=group.id, revision=group.revision,
                         previous_state_digest=previous.digest if previous else b"",
                         author=author, state=new_state, timestamp=timestamp)
    data = change.SerializeToString()
    return SignedGroupChange(change=data,
                             signature=xeddsa.sign(identity.private, CHANGE_CONTEXT + data, rng))


def change_author(signed: SignedGroupChange) -> str:
    """Who claims to have made the change (check it with :func:`verify_change`)."""
    try:
        return GroupChange.FromString(signed.change).author
    except DecodeError:
        raise GroupChangeRejected("malformed group change") from None


def verify_change(signed: SignedGroupChange, current: Group | None,
                  author_key: PublicKey) -> Group:
    """The new state if ``signed`` may be applied to ``current`` (None: a group we are not
    in yet, which we join trusting the adding admin).

    Raises:
        GroupChangeRejected: with the reason.
    """
    try:
        change = GroupChange.FromString(signed.change)
        check_integers(change)
    except (DecodeError, InvalidContent):
        raise GroupChangeRejected("malformed group change") from None
    if not xeddsa.verify(author_key, CHANGE_CONTEXT + signed.change, signed.signature):
        raise GroupChangeRejected("the change's signature does not verify")
    new = Group.from_bytes(change.state)
    if new.id != change.group_id or new.revision != change.revision:
        raise GroupChangeRejected("the change and its state disagree")
    if new.members and not any(role == ADMIN for role in new.members.values()):
        raise GroupChangeRejected("a group with members needs an admin")
    author = change.author
    if current is None:
        if not new.is_admin(author):
            raise GroupChangeRejected("only an admin can add members")
        if change.revision == 0 and change.previous_state_digest:
            raise GroupChangeRejected("a creation has no previous state")
        return new
    if change.group_id != current.id:
        raise GroupChangeRejected("the change is for another group")
    if change.revision != current.revision + 1:
        raise GroupChangeRejected(f"expected revision {current.revision + 1}, "
                                  f"got {change.revision}")
    if change.previous_state_digest != current.digest:
        raise GroupChangeRejected("the change does not follow the state we hold")
    if not current.is_member(author):
        raise GroupChangeRejected("the author is not a member")
    if dict(new.members) != dict(current.members):
        leaving = dict(current.members)
        leaving.pop(author, None)
        if not current.is_admin(author) and dict(new.members) != leaving:
            raise GroupChangeRejected("only an admin can change members or roles")
    attributes_changed = (new.title, new.expire_timer, new.attributes_by_admins_only) != (
        current.title, current.expire_timer, current.attributes_by_admins_only)
    if attributes_changed and not current.is_admin(author) and (
            current.attributes_by_admins_only
            or new.attributes_by_admins_only != current.attributes_by_admins_only):
        raise GroupChangeRejected("only an admin can change this group's title or timer")
    return new
