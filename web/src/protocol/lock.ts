/**
 * Serialize asynchronous operations per (owner object, key).
 *
 * The session cipher computes on a state, awaits WebCrypto, then commits. Two decrypts
 * for the same remote must not interleave there (both would commit, and a replay could
 * be accepted twice), so every session and sender-key operation runs under this lock,
 * keyed by the store object and the remote address.
 */

const locks = new WeakMap<object, Map<string, Promise<void>>>();

export async function withLock<T>(owner: object, key: string, fn: () => Promise<T>): Promise<T> {
  let queue = locks.get(owner);
  if (queue === undefined) {
    queue = new Map();
    locks.set(owner, queue);
  }
  const previous = queue.get(key) ?? Promise.resolve();
  let release!: () => void;
  const mine = new Promise<void>((resolve) => {
    release = resolve;
  });
  const tail = previous.then(() => mine);
  queue.set(key, tail);
  await previous;
  try {
    return await fn();
  } finally {
    release();
    if (queue.get(key) === tail) queue.delete(key);
  }
}
