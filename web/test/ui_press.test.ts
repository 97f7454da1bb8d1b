/** A redraw waits for a press under way (src/ui/press.ts): for the primary button only,
 * until the click of its release has run, and never longer than MAX_HOLD_MS. */

import assert from "node:assert/strict";
import { mock, test } from "node:test";

import { MAX_HOLD_MS, released, TAP_CLICK_MS, watchPresses } from "../src/ui/press.js";

const page = new EventTarget();
watchPresses(page as unknown as Window);

function pointer(type: string, fields: { pointerId?: number; button?: number; pointerType?: string; isPrimary?: boolean } = {}): void {
  page.dispatchEvent(Object.assign(new Event(type), { pointerId: 1, button: 0, pointerType: "mouse", isPrimary: true, ...fields }));
}

/** Whether `promise` has settled once the pending microtasks ran. */
async function settled(promise: Promise<void>): Promise<boolean> {
  let done = false;
  void promise.then(() => { done = true; });
  for (let i = 0; i < 5; i++) await Promise.resolve();
  return done;
}

test("a redraw waits for the left button's release and its click, and says it holds", async () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  try {
    const holds: boolean[] = [];
    assert.equal(await settled(released((h) => holds.push(h))), true, "nothing pressed: at once");
    assert.equal(holds.length, 0);
    pointer("pointerdown");
    const waiting = released((h) => holds.push(h));
    assert.equal(await settled(waiting), false);
    pointer("pointerup");
    assert.equal(await settled(waiting), false, "not before the click's task is over");
    mock.timers.tick(0);
    assert.equal(await settled(waiting), true);
    assert.deepEqual(holds, [true, false]);
  } finally {
    mock.timers.reset();
  }
});

test("a right click or a second finger does not hold redraws; a context menu ends a press", async () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  try {
    pointer("pointerdown", { button: 2 });
    assert.equal(await settled(released()), true, "the right button is not watched");
    pointer("pointerdown", { pointerId: 7, isPrimary: false, pointerType: "touch" });
    assert.equal(await settled(released()), true);
    pointer("pointerdown");
    const waiting = released();
    page.dispatchEvent(new Event("contextmenu"));
    assert.equal(await settled(waiting), true, "its release may never be seen");
  } finally {
    mock.timers.reset();
  }
});

test("a tap's click comes after its release: the redraw waits for it, or for TAP_CLICK_MS", async () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  try {
    pointer("pointerdown", { pointerType: "touch", pointerId: 3 });
    pointer("pointerup", { pointerType: "touch", pointerId: 3 });
    const waiting = released();
    mock.timers.tick(TAP_CLICK_MS - 1);
    assert.equal(await settled(waiting), false);
    page.dispatchEvent(new Event("click"));
    mock.timers.tick(0);
    assert.equal(await settled(waiting), true);

    pointer("pointerdown", { pointerType: "pen", pointerId: 4 });
    pointer("pointerup", { pointerType: "pen", pointerId: 4 });
    const noClick = released();
    mock.timers.tick(TAP_CLICK_MS);
    assert.equal(await settled(noClick), true, "a release with no click");
  } finally {
    mock.timers.reset();
  }
});

test("a press held past MAX_HOLD_MS lets the redraw go, and the next ones do not wait for it", async () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  try {
    pointer("pointerdown");
    const waiting = released();
    mock.timers.tick(MAX_HOLD_MS - 1);
    assert.equal(await settled(waiting), false);
    mock.timers.tick(1);
    assert.equal(await settled(waiting), true);
    assert.equal(await settled(released()), true, "the press is forgotten");
  } finally {
    mock.timers.reset();
  }
});
