/**
 * Whether a pointer is pressed on the page, so that a redraw can wait for its release.
 *
 * The inbox is drawn again on every message, receipt or typing notice, and a redraw takes
 * the page's elements out of the document (a kept one, such as the key-file section, is
 * put back). Chromium drops the click of a press whose element left the document between
 * the press and the release, even for a moment: a redraw landing inside a click lost the
 * click. `released()` resolves once no pointer is pressed and the click of the last
 * release has run, or after `MAX_HOLD_MS` (a press held that long is not a click, and the
 * page must not stop showing messages for it).
 */

/** The longest a redraw waits for a press to end. */
export const MAX_HOLD_MS = 10_000;

const pressed = new Set<number>();
let waiting: (() => void)[] = [];

function releaseAll(): void {
  pressed.clear();
  // the click a release makes is dispatched after pointerup in the same task: resolve after it
  setTimeout(() => {
    if (pressed.size > 0) return;
    const resolve = waiting;
    waiting = [];
    for (const r of resolve) r();
  });
}

/** Starts watching the page's pointers (once, at start-up). */
export function watchPresses(target: Window = window): void {
  target.addEventListener("pointerdown", (e) => pressed.add(e.pointerId), { capture: true });
  for (const type of ["pointerup", "pointercancel"] as const) {
    target.addEventListener(type, (e) => {
      pressed.delete(e.pointerId);
      if (pressed.size === 0) releaseAll();
    }, { capture: true });
  }
  // a release outside a window that lost the focus may never be seen
  target.addEventListener("blur", releaseAll);
}

/** Resolves when no pointer is pressed (at once if none is), with `onHold` called if it waits. */
export function released(onHold: (held: boolean) => void = () => undefined): Promise<void> {
  if (pressed.size === 0) return Promise.resolve();
  onHold(true);
  return new Promise<void>((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      onHold(false);
      resolve();
    };
    const timer = setTimeout(() => {
      waiting = waiting.filter((r) => r !== done);
      done();
    }, MAX_HOLD_MS);
    waiting.push(done);
  });
}
