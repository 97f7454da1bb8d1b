/**
 * The WebSocket of docs/websocket.md: envelopes pushed in queue order, acks, and sends
 * answered by `sent` frames. Mirrors cipherpost.client.socket.
 *
 * Browsers cannot set an Authorization header on a WebSocket, so the token travels as a
 * second offered subprotocol, `cipherpost.token.<token>` (never in the URL); the relay
 * answers with `cipherpost.batch.2` (acks may ride on sends) or `cipherpost.batch`, never
 * the token. Frames are parsed strictly: a malformed envelope is skipped (the relay pushes it again on the next
 * connection, where it is the same bytes), an unknown frame type is ignored.
 */

import { RelayError, parseEnvelope, type Envelope, type Outgoing } from "./api.js";
import { MalformedAnswer, int, isObject, list, str } from "./wire.js";

export const BATCH_SUBPROTOCOL = "cipherpost.batch";
/** Echoed by relays that take acks carried in `send` frames (docs/websocket.md). */
export const ACKS_ON_SEND_SUBPROTOCOL = "cipherpost.batch.2";
/** Under it an ack waits for our next send this long at most, ACK_HOLD ids at most (the
 * SDK's ACK_DELAY): the relay keeps the message queued meanwhile. */
const ACK_DELAY_MS = 1_000;
const ACK_HOLD = 32;
export const TOKEN_SUBPROTOCOL = "cipherpost.token.";
const SEND_TIMEOUT_MS = 30_000;

/** The socket closed before the request was answered. */
export class SocketLost extends Error {
  override readonly name = "SocketLost";
}

export interface SocketHandlers {
  /** Envelopes in queue order; the socket waits for one call to finish before the next. */
  onEnvelopes(envelopes: Envelope[]): Promise<void>;
  /** The socket closed (code 4401: this device was removed or its token is wrong). */
  onClose(code: number): void;
}

interface Pending {
  resolve(queued: number): void;
  reject(error: Error): void;
  timer: ReturnType<typeof setTimeout>;
}

export class RelaySocket {
  #ws: WebSocket;
  #nextId = 1;
  readonly #pending = new Map<number, Pending>();
  #queue: Promise<void> = Promise.resolve();
  #open = false;
  #held: string[] = [];
  #ackTimer: ReturnType<typeof setTimeout> | undefined;
  readonly ready: Promise<void>;

  constructor(server: string, token: string, private readonly handlers: SocketHandlers) {
    const url = new URL("/v1/websocket", server);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    this.#ws = new WebSocket(url, [ACKS_ON_SEND_SUBPROTOCOL, BATCH_SUBPROTOCOL, TOKEN_SUBPROTOCOL + token]);
    this.ready = new Promise((resolve, reject) => {
      this.#ws.addEventListener("open", () => {
        this.#open = true;
        resolve();
      });
      this.#ws.addEventListener("close", (event) => {
        this.#open = false;
        for (const pending of this.#pending.values()) {
          clearTimeout(pending.timer);
          pending.reject(new SocketLost("the connection closed"));
        }
        this.#pending.clear();
        reject(new SocketLost("the connection closed"));
        handlers.onClose(event.code);
      });
    });
    this.ready.catch(() => undefined);
    this.#ws.addEventListener("message", (event) => this.#frame(event.data));
  }

  /** Whether frames can be sent now: open, and not yet closing (a send on a closing
   * socket is dropped with a console error, which would lose a send or an ack). */
  get open(): boolean {
    return this.#open && this.#ws.readyState === WebSocket.OPEN;
  }

  close(): void {
    // Held acks are dropped, not sent: the relay delivers those envelopes again and they
    // are recognised by id. A frame written while the network is gone (the browser's
    // offline event closes the socket) kept Chromium from finishing the close, so the
    // page went on showing itself online.
    this.#takeHeld();
    this.#ws.close(1000);
  }

  ack(ids: string[]): void {
    // Not acknowledged while closing: the relay delivers them again, and they are
    // recognised by their envelope ids.
    if (!this.open || ids.length === 0) return;
    if (this.#ws.protocol !== ACKS_ON_SEND_SUBPROTOCOL) {
      this.#ws.send(JSON.stringify({ type: "ack", ids }));
      return;
    }
    this.#held.push(...ids); // for our next send
    if (this.#held.length >= ACK_HOLD) this.#sendHeld();
    else this.#ackTimer ??= setTimeout(() => this.#sendHeld(), ACK_DELAY_MS);
  }

  #takeHeld(): string[] {
    clearTimeout(this.#ackTimer);
    this.#ackTimer = undefined;
    const held = this.#held;
    this.#held = [];
    return held;
  }

  #sendHeld(): void {
    const ids = this.#takeHeld();
    if (this.open && ids.length > 0) this.#ws.send(JSON.stringify({ type: "ack", ids }));
  }

  /**
   * The same request as PUT /v1/messages/{account}; resolves with the count queued.
   * @throws RelayError a refusal (409, 410, ...). @throws SocketLost no answer.
   */
  send(accountId: string, timestamp: number, messages: Outgoing[]): Promise<number> {
    if (!this.open) return Promise.reject(new SocketLost("not connected"));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new SocketLost("no answer to a send"));
      }, SEND_TIMEOUT_MS);
      this.#pending.set(id, { resolve, reject, timer });
      const ack = this.#held.length > 0 ? { ack: this.#takeHeld() } : {};
      this.#ws.send(JSON.stringify({ type: "send", id, account_id: accountId, timestamp, messages, ...ack }));
    });
  }

  #frame(data: unknown): void {
    let frame: unknown;
    try {
      if (typeof data !== "string") throw new MalformedAnswer("binary frame");
      frame = JSON.parse(data);
      if (!isObject(frame)) throw new MalformedAnswer("frame is not an object");
      const type = str(frame, "type", "frame", 32);
      if (type === "message" || type === "messages") {
        const raw = type === "message" ? [frame.envelope] : list(frame, "envelopes", "frame", 256);
        const envelopes: Envelope[] = [];
        for (const item of raw) {
          try {
            envelopes.push(parseEnvelope(item));
          } catch (error) {
            console.warn("cipherpost: skipped a malformed envelope:", (error as Error).message);
          }
        }
        this.#queue = this.#queue.then(() => this.handlers.onEnvelopes(envelopes)).catch((error) => {
          console.warn("cipherpost: envelopes not processed:", (error as Error).message);
        });
      } else if (type === "sent") {
        this.#sent(frame);
      }
      // "acked" and frame types added later need nothing from us.
    } catch (error) {
      console.warn("cipherpost: ignored a malformed frame:", (error as Error).message);
    }
  }

  #sent(frame: Record<string, unknown>): void {
    const id = int(frame, "id", "sent frame", 1, Number.MAX_SAFE_INTEGER);
    const pending = this.#pending.get(id);
    if (pending === undefined) return;
    this.#pending.delete(id);
    clearTimeout(pending.timer);
    const status = int(frame, "status", "sent frame", 100, 599);
    if (status === 200) {
      pending.resolve(int(frame, "queued", "sent frame", 0, 127));
      return;
    }
    const error = isObject(frame.error) ? frame.error : {};
    const code = typeof error.code === "string" ? error.code.slice(0, 64) : "unknown";
    const message = typeof error.message === "string" ? error.message.slice(0, 200) : "the relay refused";
    pending.reject(new RelayError(status, code, message, frame));
  }
}
