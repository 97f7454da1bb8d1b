/**
 * Whether the primary button (or a finger or pen) is pressed on the page, so that a
 * redraw can wait for its release.
 *
 * The inbox is drawn again on every message, receipt or typing notice, and a redraw takes
 * the page's elements out of the document (a kept one, such as the key-file section, is
 * put back). Chromium drops the click of a press whose element left the document between
 * the press and the release, even for a moment: a redraw landing inside a click lost the
 * click. `released()` resolves once no press is held and the click of the last release
 * has run, or after `MAX_HOLD_MS` (a press held that long is not a click, and the page
 * must not stop showing messages for it; the press is then forgotten).
 *
 * Only the primary button counts: a right click's release can be swallowed by the
 * context menu it opens. A mouse's click follows its release in the same task; a tap's
 * comes as a later event, so a touch or pen release waits for it (at most `TAP_CLICK_MS`).
 */

/** The longest a redraw waits for a press to end. */
export const MAX_HOLD_MS = 10_000;
/** The longest a touch or pen release waits for the click it makes. */
export const TAP_CLICK_MS = 300;

const pressed = new Set<number>();
let waiting: (() => void)[] = [];
/** Between the last release and its click having run. */
let settling: ReturnType<typeof setTimeout> | undefined;

function held(): boolean {
  return pressed.size > 0 || settling !== undefined;
}

function wake(): void {
  if (held()) return;
  const resolve = waiting;
  waiting = [];
  for (const r of resolve) r();
}

function settle(after: number): void {
  clearTimeout(settling);
  settling = setTimeout(() => {
    settling = undefined;
    wake();
  }, after);
}

function releaseAll(): void {
  pressed.clear();
  clearTimeout(settling);
  settling = undefined;
  wake();
}

/** Starts watching the page's pointers (once, at start-up). */
export function watchPresses(target: Window = window): void {
  target.addEventListener("pointerdown", (e) => {
    if (e.isPrimary && e.button === 0) pressed.add(e.pointerId);
  }, { capture: true });
  target.addEventListener("pointerup", (e) => {
    if (!pressed.delete(e.pointerId) || pressed.size > 0) return;
    // a mouse's click is dispatched after pointerup in the same task; a tap's comes later
    settle(e.pointerType === "mouse" ? 0 : TAP_CLICK_MS);
  }, { capture: true });
  // the click has run (the page's listeners ran before this one, on the window)
  target.addEventListener("click", () => {
    if (settling !== undefined) settle(0);
  });
  target.addEventListener("pointercancel", (e) => {
    if (pressed.delete(e.pointerId)) wake();
  }, { capture: true });
  // a release outside a window that lost the focus, or under a context menu, may never be seen
  target.addEventListener("blur", releaseAll);
  target.addEventListener("contextmenu", releaseAll, { capture: true });
}

/** Resolves when no press is held (at once if none is), with `onHold` called if it waits. */
export function released(onHold: (held: boolean) => void = () => undefined): Promise<void> {
  if (!held()) return Promise.resolve();
  onHold(true);
  return new Promise<void>((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      onHold(false);
      resolve();
    };
    const timer = setTimeout(() => {
      waiting = waiting.filter((r) => r !== done);
      releaseAll(); // held too long to be a click: later redraws do not wait for it
      done();
    }, MAX_HOLD_MS);
    waiting.push(done);
  });
}
