/** The socket's acks under `cipherpost.batch.2` (docs/websocket.md): held for the next
 * send, sent alone after the delay or at the cap (dropped on close), and sent at once to an
 * older relay. A fake WebSocket records what is written; no network. */

import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";

import { RelaySocket } from "../src/app/socket.js";

class FakeWebSocket extends EventTarget {
  static OPEN = 1;
  static last: FakeWebSocket;
  static echo = "cipherpost.batch.2";
  readonly written: Record<string, unknown>[] = [];
  readyState = 0;
  protocol = "";

  constructor(readonly url: URL, readonly offered: string[]) {
    super();
    FakeWebSocket.last = this;
    queueMicrotask(() => {
      this.readyState = 1;
      this.protocol = FakeWebSocket.echo;
      this.dispatchEvent(new Event("open"));
    });
  }

  send(text: string): void {
    this.written.push(JSON.parse(text) as Record<string, unknown>);
  }

  close(): void {
    this.readyState = 3;
  }
}

const handlers = { onEnvelopes: async () => undefined, onClose: () => undefined };
const real = globalThis.WebSocket;

beforeEach(() => {
  (globalThis as { WebSocket: unknown }).WebSocket = FakeWebSocket;
});
afterEach(() => {
  (globalThis as { WebSocket: unknown }).WebSocket = real;
});

async function opened(echo: string): Promise<[RelaySocket, FakeWebSocket]> {
  FakeWebSocket.echo = echo;
  const socket = new RelaySocket("http://127.0.0.1:8080", "t0ken", handlers);
  await socket.ready;
  return [socket, FakeWebSocket.last];
}

test("acks ride on the next send, and the relay is offered batch.2 first", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const [socket, ws] = await opened("cipherpost.batch.2");
  assert.deepEqual(ws.offered, ["cipherpost.batch.2", "cipherpost.batch", "cipherpost.token.t0ken"]);
  socket.ack(["a"]);
  socket.ack(["b"]);
  assert.equal(ws.written.length, 0);
  void socket.send("bob", 5, []).catch(() => undefined);
  void socket.send("bob", 6, []).catch(() => undefined);
  assert.deepEqual(ws.written.map((f) => f.ack), [["a", "b"], undefined]);
  t.mock.timers.tick(5_000);
  assert.equal(ws.written.length, 2); // the timer went with the held acks
  t.mock.timers.tick(30_000); // the sends' own timeouts
});

test("held acks go alone after a second and at 32 ids; on close they are dropped (delivered again)", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const [socket, ws] = await opened("cipherpost.batch.2");
  socket.ack(["a"]);
  t.mock.timers.tick(999);
  assert.equal(ws.written.length, 0);
  t.mock.timers.tick(1);
  assert.deepEqual(ws.written, [{ type: "ack", ids: ["a"] }]);
  const ids = Array.from({ length: 32 }, (_, i) => String(i));
  for (const id of ids) socket.ack([id]);
  assert.deepEqual(ws.written[1], { type: "ack", ids });
  socket.ack(["last"]);
  socket.close();
  assert.deepEqual(ws.written.slice(2), []);
  t.mock.timers.tick(5_000); // and the timer went with them
  assert.deepEqual(ws.written.slice(2), []);
});

test("an older relay gets every ack at once in an ack frame", async () => {
  const [socket, ws] = await opened("cipherpost.batch");
  socket.ack(["a"]);
  assert.deepEqual(ws.written, [{ type: "ack", ids: ["a"] }]);
});
