/**
 * Group state and signed changes (docs/spec/groups.md): pure functions, no I/O. Mirrors
 * cipherpost.client.groups. A group's state lives only on its members' devices; every
 * change is signed (XEdDSA) by its author with the account's identity key, and a member
 * accepts a change only when it follows the state it holds and its author was allowed
 * to make it. States are kept as the exact bytes they were accepted as (the next
 * change names their SHA-256).
 */

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { sha256 } from "@noble/hashes/sha2.js";

import { concat, toHex, utf8, type Random } from "../protocol/bytes.js";
import type { IdentityKeyPair, PublicKey } from "../protocol/keys.js";
import * as xeddsa from "../protocol/xeddsa.js";
import { checkIntegers, u64 } from "./content.js";
import {
  GroupChangeSchema, GroupState_Role, GroupStateSchema, SignedGroupChangeSchema, type GroupChange,
  type SignedGroupChange,
} from "./proto/cipherpost/app/v1/app_pb.js";

export const CHANGE_CONTEXT = utf8("Cipherpost group change v1");
export const ADMIN = GroupState_Role.ADMIN;
export const MEMBER = GroupState_Role.MEMBER;
export const GROUP_ID_BYTES = 32;

/** A group change that does not verify or is not allowed; the state is unchanged. */
export class GroupChangeRejected extends Error {
  override readonly name = "GroupChangeRejected";
}

/** A group state as accepted, with the exact bytes it was accepted as. */
export class Group {
  private constructor(readonly id: Uint8Array, readonly revision: number, readonly title: string,
    readonly members: ReadonlyMap<string, GroupState_Role>, readonly expireTimer: number,
    readonly attributesByAdminsOnly: boolean, readonly stateBytes: Uint8Array) {}

  /** @throws GroupChangeRejected `data` is not a valid GroupState. */
  static fromBytes(data: Uint8Array): Group {
    let state;
    try {
      state = fromBinary(GroupStateSchema, data);
      checkIntegers(GroupStateSchema, state);
    } catch {
      throw new GroupChangeRejected("malformed group state");
    }
    const members = new Map<string, GroupState_Role>();
    for (const member of state.members) {
      if (member.accountId === "" || members.has(member.accountId)) throw new GroupChangeRejected("malformed member list");
      members.set(member.accountId, member.role);
    }
    if (state.id.length !== GROUP_ID_BYTES) throw new GroupChangeRejected("a group id is 32 bytes");
    return new Group(state.id, Number(state.revision), state.title, members, state.expireTimer,
      state.attributesByAdminsOnly, data.slice());
  }

  get digest(): Uint8Array {
    return sha256(this.stateBytes);
  }

  /** The conversation key of this group in the local history. */
  get conversation(): string {
    return conversationId(this.id);
  }

  isAdmin(account: string): boolean {
    return this.members.get(account) === ADMIN;
  }

  isMember(account: string): boolean {
    return this.members.has(account);
  }
}

export function conversationId(groupId: Uint8Array): string {
  return `group:${toHex(groupId)}`;
}

/**
 * A serialized GroupState (members in account-id order, so every member that builds the
 * same state builds the same bytes).
 */
export function encodeState(groupId: Uint8Array, revision: number, title: string,
  members: ReadonlyMap<string, GroupState_Role>, options: { expireTimer?: number; attributesByAdminsOnly?: boolean } = {}): Uint8Array {
  const sorted = [...members].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return toBinary(GroupStateSchema, create(GroupStateSchema, {
    id: groupId, revision: u64(revision), title, expireTimer: options.expireTimer ?? 0,
    attributesByAdminsOnly: options.attributesByAdminsOnly ?? false,
    members: sorted.map(([accountId, role]) => ({ accountId, role })),
  }));
}

/** Sign the change from `previous` (undefined at creation) to `newState`. */
export function signChange(identity: IdentityKeyPair, author: string, previous: Group | undefined,
  newState: Uint8Array, timestamp: number, rng: Random): SignedGroupChange {
  const group = Group.fromBytes(newState);
  const change = toBinary(GroupChangeSchema, create(GroupChangeSchema, {
    groupId: group.id, revision: u64(group.revision), previousStateDigest: previous?.digest ?? new Uint8Array(0),
    author, state: newState, timestamp: u64(timestamp),
  }));
  return create(SignedGroupChangeSchema, {
    change, signature: xeddsa.sign(identity.privateKey, concat(CHANGE_CONTEXT, change), rng),
  });
}

function parseChange(signed: SignedGroupChange): GroupChange {
  try {
    const change = fromBinary(GroupChangeSchema, signed.change);
    checkIntegers(GroupChangeSchema, change);
    return change;
  } catch {
    throw new GroupChangeRejected("malformed group change");
  }
}

/** Who claims to have made the change (check it with `verifyChange`). */
export function changeAuthor(signed: SignedGroupChange): string {
  return parseChange(signed).author;
}

/** The group a change is about. */
export function changeGroupId(signed: SignedGroupChange): Uint8Array {
  return parseChange(signed).groupId;
}

function sameMembers(a: ReadonlyMap<string, GroupState_Role>, b: ReadonlyMap<string, GroupState_Role>): boolean {
  return a.size === b.size && [...a].every(([k, v]) => b.get(k) === v);
}

function bytesSame(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * The new state if `signed` may be applied to `current` (undefined: a group we are not
 * in yet, which we join trusting the adding admin).
 * @throws GroupChangeRejected with the reason.
 */
export function verifyChange(signed: SignedGroupChange, current: Group | undefined, authorKey: PublicKey): Group {
  const change = parseChange(signed);
  if (!xeddsa.verify(authorKey, concat(CHANGE_CONTEXT, signed.change), signed.signature)) {
    throw new GroupChangeRejected("the change's signature does not verify");
  }
  const next = Group.fromBytes(change.state);
  const revision = Number(change.revision);
  if (!bytesSame(next.id, change.groupId) || next.revision !== revision) {
    throw new GroupChangeRejected("the change and its state disagree");
  }
  if (next.members.size > 0 && ![...next.members.values()].includes(ADMIN)) {
    throw new GroupChangeRejected("a group with members needs an admin");
  }
  const author = change.author;
  if (current === undefined) {
    if (!next.isAdmin(author)) throw new GroupChangeRejected("only an admin can add members");
    if (revision === 0 && change.previousStateDigest.length > 0) {
      throw new GroupChangeRejected("a creation has no previous state");
    }
    return next;
  }
  if (!bytesSame(change.groupId, current.id)) throw new GroupChangeRejected("the change is for another group");
  if (revision !== current.revision + 1) {
    throw new GroupChangeRejected(`expected revision ${current.revision + 1}, got ${revision}`);
  }
  // A digest is public; comparing it in constant time buys nothing.
  if (!bytesSame(change.previousStateDigest, current.digest)) {
    throw new GroupChangeRejected("the change does not follow the state we hold");
  }
  if (!current.isMember(author)) throw new GroupChangeRejected("the author is not a member");
  if (!sameMembers(next.members, current.members)) {
    const leaving = new Map(current.members);
    leaving.delete(author);
    if (!current.isAdmin(author) && !sameMembers(next.members, leaving)) {
      throw new GroupChangeRejected("only an admin can change members or roles");
    }
  }
  const attributesChanged = next.title !== current.title || next.expireTimer !== current.expireTimer
    || next.attributesByAdminsOnly !== current.attributesByAdminsOnly;
  if (attributesChanged && !current.isAdmin(author)
    && (current.attributesByAdminsOnly || next.attributesByAdminsOnly !== current.attributesByAdminsOnly)) {
    throw new GroupChangeRejected("only an admin can change this group's title or timer");
  }
  return next;
}

/** What an edit changes; unnamed fields keep the group's values. */
export interface GroupEdit {
  roles?: ReadonlyMap<string, GroupState_Role>;
  title?: string;
  expireTimer?: number;
}

/**
 * The serialized next state of `group` after `edit` (revision + 1), as
 * cipherpost.client.Client._edit_group builds it: check it with `verifyChange` before
 * sending.
 */
export function editedState(group: Group, edit: GroupEdit): Uint8Array {
  return encodeState(group.id, group.revision + 1, edit.title ?? group.title, edit.roles ?? group.members,
    { expireTimer: edit.expireTimer ?? group.expireTimer, attributesByAdminsOnly: group.attributesByAdminsOnly });
}

/** A group title as the app takes it: trimmed, 1 to 100 characters. @throws RangeError */
export function groupTitle(title: string): string {
  const name = title.trim();
  if (name.length === 0 || name.length > 100) throw new RangeError("a group title is 1 to 100 characters");
  return name;
}
