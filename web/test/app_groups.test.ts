/** Group states and signed changes (src/app/groups.ts): what a member accepts and refuses. */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { systemRandom } from "../src/protocol/bytes.js";
import { IdentityKeyPair } from "../src/protocol/keys.js";
import {
  ADMIN, encodeState, Group, GroupChangeRejected, MEMBER, signChange, verifyChange,
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
});
