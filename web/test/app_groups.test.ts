/** Group states and signed changes (src/app/groups.ts): what a member accepts and refuses. */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { systemRandom } from "../src/protocol/bytes.js";
import { IdentityKeyPair } from "../src/protocol/keys.js";
import {
  ADMIN, editedState, encodeState, Group, GroupChangeRejected, groupTitle, MEMBER, signChange, verifyChange,
} from "../src/app/groups.js";

const A = "aaaaaaaa-0000-4000-8000-000000000001";
const B = "bbbbbbbb-0000-4000-8000-000000000002";
const C = "cccccccc-0000-4000-8000-000000000003";
const ID = new Uint8Array(32).fill(7);

describe("groups", () => {
  const alice = IdentityKeyPair.generate(systemRandom);
  const bob = IdentityKeyPair.generate(systemRandom);
  const created = signChange(alice, A, undefined, encodeState(ID, 0, "t", new Map([[A, ADMIN], [B, MEMBER]])), 1, systemRandom);
  const group = verifyChange(created, undefined, alice.publicKey);

  test("a creation by an admin verifies; the state keeps its bytes and sorted members", () => {
    assert.equal(group.revision, 0);
    assert.equal(group.title, "t");
    assert.ok(group.isAdmin(A) && group.isMember(B) && !group.isAdmin(B));
    assert.deepEqual(Group.fromBytes(group.stateBytes).stateBytes, group.stateBytes);
    assert.equal(group.conversation, `group:${"07".repeat(32)}`);
  });

  test("a forged signature, a wrong revision or previous state, and a member adding members are refused", () => {
    assert.throws(() => verifyChange(created, undefined, bob.publicKey), GroupChangeRejected);
    const skip = signChange(alice, A, group, encodeState(ID, 2, "t2", group.members), 2, systemRandom);
    assert.throws(() => verifyChange(skip, group, alice.publicKey), /expected revision 1/);
    const byMember = signChange(bob, B, group, encodeState(ID, 1, "t", new Map([...group.members, [C, MEMBER]])), 2, systemRandom);
    assert.throws(() => verifyChange(byMember, group, bob.publicKey), /only an admin can change members/);
    const renamed = signChange(alice, A, group, encodeState(ID, 1, "renamed", group.members), 2, systemRandom);
    const next = verifyChange(renamed, group, alice.publicKey);
    assert.equal(next.title, "renamed");
    assert.throws(() => verifyChange(renamed, next, alice.publicKey), GroupChangeRejected); // replayed
  });

  test("a member may leave by itself", () => {
    const leave = signChange(bob, B, group, encodeState(ID, 1, "t", new Map([[A, ADMIN]])), 3, systemRandom);
    assert.ok(!verifyChange(leave, group, bob.publicKey).isMember(B));
  });

  test("edits keep what they do not name and chain onto the state", () => {
    const added = editedState(group, { roles: new Map([...group.members, [C, MEMBER]]) });
    const next = verifyChange(signChange(alice, A, group, added, 4, systemRandom), group, alice.publicKey);
    assert.equal(next.revision, 1);
    assert.equal(next.title, "t");
    assert.deepEqual([...next.members.keys()].sort(), [A, B, C]);
    const renamed = verifyChange(signChange(alice, A, next, editedState(next, { title: "new" }), 5, systemRandom), next, alice.publicKey);
    assert.equal(renamed.title, "new");
    assert.deepEqual(renamed.members, next.members);
    // the last admin leaving a group with members is refused (it would have no admin)
    const alone = new Map(group.members);
    alone.delete(A);
    assert.throws(() => verifyChange(signChange(alice, A, group, editedState(group, { roles: alone }), 6, systemRandom),
      group, alice.publicKey), /needs an admin/);
    // a member renaming: allowed unless attributes are kept to admins
    assert.equal(verifyChange(signChange(bob, B, group, editedState(group, { title: "b" }), 7, systemRandom), group,
      bob.publicKey).title, "b");
    assert.equal(groupTitle("  x "), "x");
    assert.throws(() => groupTitle(" "), RangeError);
    assert.throws(() => groupTitle("x".repeat(101)), RangeError);
  });
});
