/**
 * One tab at a time. Two tabs of the same browser share one IndexedDB store; both running
 * would decrypt and send with the same sessions, each from its own copy in memory, and
 * the later write would roll the other's ratchet back (and a password change in one
 * would leave the other sealing records under the old key). An exclusive Web Lock per
 * store, held for the page's life, keeps the second tab out until the user moves
 * Cipherpost there; the first tab then reloads and shows that it is open elsewhere.
 */

type Locks = {
  request(name: string, options: { ifAvailable?: boolean; steal?: boolean },
    callback: (lock: unknown) => Promise<void> | undefined): Promise<void>;
};

function locks(): Locks | undefined {
  return (navigator as Navigator & { locks?: Locks }).locks;
}

/** Reload when another tab takes the lock: that tab runs Cipherpost now. */
function leaveWhenTaken(request: Promise<void>): void {
  request.catch(() => location.reload());
}

const forever = () => new Promise<void>(() => undefined);

/** Take the store's lock if no other tab holds it; true when this tab may run. */
export function holdTab(store: string): Promise<boolean> {
  const manager = locks();
  if (manager === undefined) return Promise.resolve(true); // no Web Locks here: nothing to coordinate with
  return new Promise((resolve) => {
    leaveWhenTaken(manager.request(`cipherpost:${store}`, { ifAvailable: true }, (lock) => {
      resolve(lock !== null);
      return lock === null ? undefined : forever();
    }));
  });
}

/** Take the lock from the tab holding it (which reloads); resolves once this tab holds it. */
export function takeTab(store: string): Promise<void> {
  const manager = locks();
  if (manager === undefined) return Promise.resolve();
  return new Promise((resolve) => {
    leaveWhenTaken(manager.request(`cipherpost:${store}`, { steal: true }, () => {
      resolve();
      return forever();
    }));
  });
}
