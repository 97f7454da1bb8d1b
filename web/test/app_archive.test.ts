/** The one-time history archive (src/app/archive.ts): a part sealed by the Python SDK opens
 * here, and only under its own number, count and key. */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { fromHex } from "../src/protocol/bytes.js";
import { ArchiveError, openPart } from "../src/app/archive.js";

// python: archive.seal_part(bytes(range(32)), 1, 2, HistoryArchivePart(events=[HistoryEvent(message=
//   HistoryMessage(conversation="c", author="a", author_device=1, received_at=5, data=DataMessage(timestamp=7,
//   text="archived")))]))
const SEALED = fromHex("011fccb5e44ef5530c0f4f4938cca308fb1d980e5c05c037ec1a7666bda630735e3a9667f1282c843c59dfc3016ce407332e165392fdee1d47be151d6558b59b08047165fa11499dc6caab34b1403998e9d4a5da17745e8018c3f9cd60345c68094cf7a13a5cdbf6c506e270983bea0f77431a0b4f7454e87cd6b202ccc91149654cb22b5a3913dbcf0777276990a9e67ad2a03ed9a84c6b8d2f391067ea4c10c73af635f6a125d67cc96e93edc4869017");
const KEY = new Uint8Array(32).map((_, i) => i);

describe("archive", () => {
  test("a part sealed by the Python SDK opens", async () => {
    const part = await openPart(KEY, 1, 2, SEALED);
    assert.equal(part.events.length, 1);
    const event = part.events[0]!.body;
    assert.equal(event.case, "message");
    if (event.case === "message") {
      assert.equal(event.value.data?.text, "archived");
      assert.equal(event.value.conversation, "c");
    }
  });

  test("another position, count or key does not open it", async () => {
    await assert.rejects(openPart(KEY, 0, 2, SEALED), ArchiveError);
    await assert.rejects(openPart(KEY, 1, 3, SEALED), ArchiveError);
    await assert.rejects(openPart(new Uint8Array(32), 1, 2, SEALED), ArchiveError);
    await assert.rejects(openPart(KEY, 1, 2, SEALED.subarray(0, 10)), ArchiveError);
  });
});
