/**
 * The bytes under the device store: string keys to byte values, prefix scans, and
 * atomic batches. IndexedDB in the browser (one object store, one readwrite transaction
 * per batch); a Map in tests.
 *
 * IndexedDB commits a transaction as soon as it has no pending request at the end of a
 * task, so nothing asynchronous (WebCrypto) may run inside one: the device store seals
 * every value of a unit of work first, then hands the batch over here.
 */

export interface Kv {
  get(key: string): Promise<Uint8Array | undefined>;
  /** Every [key, value] whose key starts with `prefix`, in key order. */
  scan(prefix: string): Promise<[string, Uint8Array][]>;
  /** Apply all puts (a value) and deletes (null) atomically. */
  commit(batch: Map<string, Uint8Array | null>): Promise<void>;
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

  async commit(batch: Map<string, Uint8Array | null>): Promise<void> {
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

  commit(batch: Map<string, Uint8Array | null>): Promise<void> {
    return new Promise((resolve, reject) => {
      const tx = this.db.transaction(STORE, "readwrite", { durability: "strict" });
      const store = tx.objectStore(STORE);
      for (const [key, value] of batch) {
        if (value === null) store.delete(key);
        else store.put(value, key);
      }
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error ?? new Error("IndexedDB transaction failed"));
      tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
    });
  }

  close(): void {
    this.db.close();
  }
}
