/**
 * The bytes under the device store: string keys to byte values, prefix scans, and
 * atomic batches. IndexedDB in the browser (one object store, one readwrite transaction
 * per batch); a Map in tests.
 *
 * IndexedDB commits a transaction as soon as it has no pending request at the end of a
 * task, so nothing asynchronous (WebCrypto) may run inside one: the device store seals
 * every value of a unit of work first, then hands the batch over here.
 *
 * A commit may be conditional (compare-and-set): `expect` names records and the values
 * they must still hold (undefined: absent), read in the same transaction as the writes;
 * if one differs nothing is written and KvConflict says so. Work that reads, then runs
 * something long (a passkey ceremony), then writes uses it to refuse a write based on
 * what another tab or unit has changed meanwhile.
 */

import { bytesEqual } from "../../protocol/bytes.js";

/** A conditional commit found a record changed since it was read: nothing was written. */
export class KvConflict extends Error {
  override readonly name = "KvConflict";
}

/** Whether a stored value is the expected one (undefined: absent). */
function holds(stored: unknown, expected: Uint8Array | undefined): boolean {
  return stored instanceof Uint8Array ? expected !== undefined && bytesEqual(stored, expected) : expected === undefined;
}

export interface Kv {
  get(key: string): Promise<Uint8Array | undefined>;
  /** Every [key, value] whose key starts with `prefix`, in key order. */
  scan(prefix: string): Promise<[string, Uint8Array][]>;
  /**
   * Apply all puts (a value) and deletes (null) atomically; with `expect`, only if each
   * record named there still holds that value (undefined: absent). @throws KvConflict
   */
  commit(batch: Map<string, Uint8Array | null>, expect?: Map<string, Uint8Array | undefined>): Promise<void>;
  close(): void;
}

export class MemoryKv implements Kv {
  readonly data = new Map<string, Uint8Array>();

  async get(key: string): Promise<Uint8Array | undefined> {
    return this.data.get(key)?.slice();
  }

  async scan(prefix: string): Promise<[string, Uint8Array][]> {
    return [...this.data.entries()].filter(([k]) => k.startsWith(prefix)).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, v]) => [k, v.slice()]);
  }

  async commit(batch: Map<string, Uint8Array | null>, expect?: Map<string, Uint8Array | undefined>): Promise<void> {
    for (const [key, value] of expect ?? []) {
      if (!holds(this.data.get(key), value)) throw new KvConflict(`the record ${key} changed`);
    }
    for (const [key, value] of batch) {
      if (value === null) this.data.delete(key);
      else this.data.set(key, value.slice());
    }
  }

  close(): void {}
}

const STORE = "kv";

function request<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error("IndexedDB request failed"));
  });
}

export class IdbKv implements Kv {
  private constructor(private readonly db: IDBDatabase) {}

  /** Open (creating when absent) the database `name`. */
  static async open(name: string, factory: IDBFactory = indexedDB): Promise<IdbKv> {
    const req = factory.open(name, 1);
    req.onupgradeneeded = () => {
      if (!req.result.objectStoreNames.contains(STORE)) req.result.createObjectStore(STORE);
    };
    return new IdbKv(await request(req));
  }

  /** Delete the database `name` (the account on this browser is gone for good). */
  static async destroy(name: string, factory: IDBFactory = indexedDB): Promise<void> {
    await request(factory.deleteDatabase(name) as IDBRequest<unknown>);
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    const value = await request(this.db.transaction(STORE, "readonly").objectStore(STORE).get(key));
    return value instanceof Uint8Array ? value : undefined;
  }

  async scan(prefix: string): Promise<[string, Uint8Array][]> {
    const store = this.db.transaction(STORE, "readonly").objectStore(STORE);
    const range = IDBKeyRange.bound(prefix, `${prefix}\uffff`);
    const [keys, values] = await Promise.all([request(store.getAllKeys(range)), request(store.getAll(range))]);
    return keys.map((k, i) => [String(k), values[i] as Uint8Array]);
  }

  commit(batch: Map<string, Uint8Array | null>, expect?: Map<string, Uint8Array | undefined>): Promise<void> {
    return new Promise((resolve, reject) => {
      const tx = this.db.transaction(STORE, "readwrite", { durability: "strict" });
      const store = tx.objectStore(STORE);
      let changed: string | undefined;
      const write = (): void => {
        for (const [key, value] of batch) {
          if (value === null) store.delete(key);
          else store.put(value, key);
        }
      };
      // The expected values are read in this transaction; the writes follow from the last
      // read's callback, so no other transaction on the store runs in between.
      let unread = expect?.size ?? 0;
      if (unread === 0) write();
      for (const [key, value] of expect ?? []) {
        const read = store.get(key);
        read.onsuccess = () => {
          if (changed !== undefined) return;
          if (!holds(read.result, value)) {
            changed = key;
            tx.abort();
          } else if (--unread === 0) {
            write();
          }
        };
      }
      // An abort fails the reads still pending too, whose errors reach onerror first.
      const failed = (what: string) => () => reject(changed !== undefined ? new KvConflict(`the record ${changed} changed`)
        : tx.error ?? new Error(`IndexedDB transaction ${what}`));
      tx.oncomplete = () => resolve();
      tx.onerror = failed("failed");
      tx.onabort = failed("aborted");
    });
  }

  close(): void {
    this.db.close();
  }
}
