/**
 * Drives the web app in Debian's chromium (playwright-core, headless) for
 * tests/web/test_browser.py: one JSON command per stdin line, one JSON answer per stdout
 * line ({"ok": true, ...} or {"error": "..."}). The Python test runs the scenario and the
 * SDK user; this process only knows the page. Not part of the app or of `npm test`.
 *
 * Every command takes an optional `user` (default "a"): each user is a page in its own
 * browser context (its own IndexedDB), all in one chromium.
 *
 * Commands: open {url}, signup {username, password, invite?, expect_error?}, unlock {password, expect_error?},
 * reload, chat {username}, create_group {title, members}, open_conversation {account}, send {text},
 * wait_message {text, outgoing?, status?, read?}, conversations, wait_unread {account, count},
 * offline {offline}, fill {testid, text}, attach {name, mime, data (base64)}, download {name}, download_click {testid} (text, base64), press {testid}, release {download?}, set_file {testid, name, data (base64)}, count {selector}, select {testid, value}, wait_message_gone {text, timeout?}, wait_inbox {timeout?}, watch_progress, progress_seen, devices {count?}, safety, safety_digits, click {testid}, wait_text {testid, text}, wait_gone {testid},
 * text {testid}, click_selector {selector}, elements {testid, selector?} (text and data-* of each, once one shows), wait_selector {selector},
 * messages, dump_store (every IndexedDB record), problems, screenshot {path}, reset (closes every user), close,
 * qr {testid} (the code drawn there read back by a QR decoder, next to its data-qr-payload),
 * webauthn {action, ...} (Chromium's virtual authenticators: ./webauthn.ts).
 * tab {of} (another tab of user `of`'s browser, under this command's `user` name).
 * route {path, prefix?, method?, action: "abort" | "patch", patch?} and unroute_all: requests failed or answers changed.
 */

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";

import decodeQR from "@paulmillr/qr/decode.js";
import { chromium, type BrowserContext, type ConsoleMessage, type Page } from "playwright-core";

import { webauthn } from "./webauthn.js";

const TIMEOUT = 30_000;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
interface User {
  context: BrowserContext;
  page: Page;
  problems: string[];
}

const users = new Map<string, User>();

async function user(name: string): Promise<User> {
  let found = users.get(name);
  if (found === undefined) {
    const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
    const page = await context.newPage();
    page.setDefaultTimeout(TIMEOUT);
    const problems: string[] = [];
    page.on("console", (message: ConsoleMessage) => {
      const text = message.text();
      if (message.type() === "error" || /Content Security Policy|Trusted Type/i.test(text)) problems.push(text);
    });
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    found = { context, page, problems };
    users.set(name, found);
  }
  return found;
}

type Command = Record<string, unknown> & { cmd: string };

/** The page-side code of `dump_store`. */
const DUMP_STORE = `(async () => {
  const request = (r) => new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
  const binary = [];
  const text = [];
  const walk = (value) => {
    if (value instanceof ArrayBuffer || ArrayBuffer.isView(value)) {
      const bytes = value instanceof ArrayBuffer ? new Uint8Array(value)
        : new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
      let s = "";
      for (const b of bytes) s += String.fromCharCode(b);
      binary.push(btoa(s));
      return "<binary>";
    }
    if (Array.isArray(value)) return value.map(walk);
    if (value !== null && typeof value === "object") {
      return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, walk(v)]));
    }
    return value;
  };
  let records = 0;
  for (const info of await indexedDB.databases()) {
    if (!info.name) continue;
    const db = await request(indexedDB.open(info.name));
    for (const name of Array.from(db.objectStoreNames)) {
      const store = db.transaction(name, "readonly").objectStore(name);
      const keys = await request(store.getAllKeys());
      const values = await request(store.getAll());
      records += values.length;
      text.push(JSON.stringify({ db: info.name, store: name, keys: walk(keys), values: walk(values) }));
    }
    db.close();
  }
  return { binary, text, records };
})()`;

/** The file a page saves while `action` runs: its text, base64 and name. When none comes,
 * the error says what the page shows in its alerts and hints (why it saved nothing). */
async function saved(page: Page, action: () => Promise<void>): Promise<Record<string, unknown>> {
  // what the page submits and logs meanwhile, for the error below
  await page.evaluate(`window.__submits ??= [], window.__submits.length = 0, window.__watching ??= document.addEventListener(
    "submit", (e) => window.__submits.push([...e.target.querySelectorAll("input")].map((i) => i.type + ":" + i.value.length)),
    true) ?? true`);
  const logged: string[] = [];
  const log = (m: ConsoleMessage): void => void logged.push(`${m.type()}: ${m.text()}`);
  page.on("console", log);
  const [download] = await Promise.all([page.waitForEvent("download").catch(async (error: unknown) => {
    const shown = await page.locator("[role=alert]:visible, p.hint:visible").allInnerTexts().catch(() => []);
    const submits = await page.evaluate("window.__submits ?? []").catch(() => "?");
    throw new Error(`${String(error)}; the page shows: ${JSON.stringify(shown.filter((t) => t.trim() !== ""))}; `
      + `submitted: ${JSON.stringify(submits)}; logged: ${JSON.stringify(logged)}`);
  }), action()]).finally(() => page.off("console", log));
  const data = readFileSync(await download.path());
  return { text: data.toString("utf8"), base64: data.toString("base64"), filename: download.suggestedFilename() };
}

async function run(c: Command): Promise<Record<string, unknown>> {
  if (c.cmd === "close") {
    await browser.close();
    return {};
  }
  if (c.cmd === "reset") {
    // close every user's context (pages, IndexedDB, problems): the next test starts afresh
    for (const context of new Set([...users.values()].map((u) => u.context))) await context.close();
    users.clear();
    return {};
  }
  if (c.cmd === "tab") {
    // another tab (page) of user `of`'s browser, under the name `user`: same IndexedDB
    const base = await user(String(c.of));
    const page = await base.context.newPage();
    page.setDefaultTimeout(TIMEOUT);
    page.on("pageerror", (error) => base.problems.push(`page error: ${error.message}`));
    users.set(String(c.user), { context: base.context, page, problems: base.problems });
    return {};
  }
  const { context, page, problems } = await user(typeof c.user === "string" ? c.user : "a");
  switch (c.cmd) {
    case "open": {
      const response = await page.goto(String(c.url));
      const headers = response?.headers() ?? {};
      await page.locator("[data-testid=signup], [data-testid=unlock], [data-testid=other-tab]").first().waitFor();
      return { csp: headers["content-security-policy"] ?? null, status: response?.status() };
    }
    case "signup": {
      await page.getByTestId("signup-username").fill(String(c.username));
      await page.getByTestId("signup-password").fill(String(c.password));
      await page.getByTestId("signup-confirm").fill(String(c.password));
      if (c.invite !== undefined) await page.getByTestId("signup-invite").fill(String(c.invite));
      if (c.screenshot) await page.screenshot({ path: String(c.screenshot) });
      const started = performance.now();
      await page.getByTestId("signup-submit").click();
      if (c.expect_error) {
        const error = page.locator("[data-testid=signup] [data-testid=error]:not(:empty)");
        await error.waitFor();
        return { error_text: await error.textContent() };
      }
      await page.getByTestId("inbox").waitFor();
      await page.locator("[data-testid=connection][data-online=true]").waitFor();
      return { ms: Math.round(performance.now() - started) };
    }
    case "reload": {
      const started = performance.now();
      await page.reload();
      await page.getByTestId("unlock").waitFor();
      return { ms: Math.round(performance.now() - started) };
    }
    case "unlock": {
      const started = performance.now();
      await page.getByTestId("unlock-password").fill(String(c.password));
      await page.getByTestId("unlock-submit").click();
      if (c.expect_error) {
        await page.locator("[data-testid=unlock] [data-testid=error]:not(:empty)").waitFor();
        return { error_text: await page.locator("[data-testid=unlock] [data-testid=error]").textContent() };
      }
      await page.getByTestId("inbox").waitFor();
      const unlocked = performance.now() - started;
      await page.locator("[data-testid=connection][data-online=true]").waitFor();
      return { ms: Math.round(unlocked), online_ms: Math.round(performance.now() - started) };
    }
    case "chat": {
      await page.getByTestId("new-chat-username").fill(String(c.username));
      await page.getByTestId("new-chat-submit").click();
      await page.locator(`[data-testid=chat-title]:text-is("${String(c.username)}")`).waitFor();
      return {};
    }
    case "create_group": {
      await page.getByTestId("new-group").click();
      await page.getByTestId("new-group-title").fill(String(c.title));
      await page.getByTestId("new-group-members").fill(String(c.members));
      await page.getByTestId("new-group-submit").click();
      await page.locator(`[data-testid=chat-title]:text-is("${String(c.title)}")`).waitFor();
      return { conversation: await page.getByTestId("chat").getAttribute("data-account") };
    }
    case "open_conversation": {
      await page.locator(`[data-testid=conversation][data-account="${String(c.account)}"]`).click();
      await page.getByTestId("chat").waitFor();
      return {};
    }
    case "send": {
      await page.getByTestId("composer-input").fill(String(c.text));
      await page.getByTestId("composer-send").click();
      return {};
    }
    case "wait_message": {
      let selector = "[data-testid=message]";
      if (c.outgoing !== undefined) selector += `[data-outgoing=${String(c.outgoing)}]`;
      if (c.status !== undefined) selector += `[data-status=${String(c.status)}]`;
      if (c.read !== undefined) selector += `[data-read=${String(c.read)}]`;
      await page.locator(selector).filter({ hasText: String(c.text) }).first().waitFor();
      return {};
    }
    case "messages": {
      const items = await page.getByTestId("message").evaluateAll((nodes) => nodes.map((n) => ({
        text: n.querySelector(".text")?.textContent, outgoing: n.getAttribute("data-outgoing"),
        author: n.querySelector(".author")?.textContent ?? null,
        status: n.getAttribute("data-status") })));
      return { messages: items };
    }
    case "safety": {
      await page.getByTestId("open-safety").click();
      const digits = await page.getByTestId("safety-digits").getAttribute("data-digits");
      return { digits };
    }
    case "fill": {
      await page.getByTestId(String(c.testid)).fill(String(c.text));
      return {};
    }
    case "devices": {
      if (c.count !== undefined) {
        await page.locator("[data-testid=device]").nth(Number(c.count) - 1).waitFor();
        await page.locator("[data-testid=device]").nth(Number(c.count)).waitFor({ state: "detached" });
      }
      const items = await page.getByTestId("device").evaluateAll((nodes) => nodes.map((n) => ({
        device: Number(n.getAttribute("data-device")), self: n.getAttribute("data-self") === "true",
        name: n.querySelector("strong")?.textContent })));
      return { devices: items };
    }
    case "attach": {
      await page.getByTestId("attach-input").setInputFiles({ name: String(c.name), mimeType: String(c.mime),
        buffer: Buffer.from(String(c.data), "base64") });
      await page.locator(`[data-testid=message][data-outgoing=true] [data-testid=attachment][data-name="${String(c.name)}"]`)
        .waitFor();
      return {};
    }
    case "download": {
      const attachment = page.locator(`[data-testid=attachment][data-name="${String(c.name)}"]`).first();
      await attachment.waitFor();
      const [download] = await Promise.all([page.waitForEvent("download"), attachment.getByTestId("download").click()]);
      const path = await download.path();
      const data = readFileSync(path);
      return { sha256: createHash("sha256").update(data).digest("hex"), size: data.length,
        filename: download.suggestedFilename() };
    }
    case "set_file": {
      // pick a file (base64 data) in a file input
      await page.getByTestId(String(c.testid)).setInputFiles({ name: String(c.name), mimeType: "application/octet-stream",
        buffer: Buffer.from(String(c.data), "base64") });
      return {};
    }
    case "count": {
      // how many elements match now (no waiting)
      return { count: await page.locator(String(c.selector)).count() };
    }
    case "download_click": {
      // click a button that saves a file: the file's text and name
      return await saved(page, () => page.getByTestId(String(c.testid)).click());
    }
    case "press": {
      // the left button held down on an element (a click's first half; release ends it)
      await page.getByTestId(String(c.testid)).hover();
      await page.mouse.down();
      return {};
    }
    case "release": {
      // the button let go; with download, the file the click saved (as download_click)
      if (c.download !== true) {
        await page.mouse.up();
        return {};
      }
      return await saved(page, () => page.mouse.up());
    }
    case "dump_store": {
      // Every record of every IndexedDB database of this user's origin, as stored: binary
      // values (ArrayBuffer, typed arrays) as base64 one by one, the rest as JSON text.
      // Plain JavaScript in a string: tsx would wrap named functions in a helper that
      // does not exist in the page.
      return await page.evaluate(DUMP_STORE) as Record<string, unknown>;
    }
    case "select": {
      await page.getByTestId(String(c.testid)).selectOption(String(c.value));
      return {};
    }
    case "wait_message_gone": {
      await page.locator("[data-testid=message]").filter({ hasText: String(c.text) }).first()
        .waitFor({ state: "detached", timeout: Number(c.timeout ?? TIMEOUT) });
      return {};
    }
    case "watch_progress": {
      // records every text the link progress counter shows (it is gone once the inbox opens)
      await page.evaluate(() => {
        const seen: string[] = [];
        (window as unknown as { linkProgress: string[] }).linkProgress = seen;
        new MutationObserver(() => {
          const text = document.querySelector("[data-testid=link-count]")?.textContent;
          if (text && seen[seen.length - 1] !== text) seen.push(text.trim());
        }).observe(document.body, { subtree: true, childList: true, characterData: true });
      });
      return {};
    }
    case "progress_seen": {
      return { seen: await page.evaluate(() => (window as unknown as { linkProgress?: string[] }).linkProgress ?? []) };
    }
    case "wait_inbox": {
      const started = performance.now();
      await page.getByTestId("inbox").waitFor({ timeout: Number(c.timeout ?? TIMEOUT) });
      await page.locator("[data-testid=connection][data-online=true]").waitFor();
      return { ms: Math.round(performance.now() - started) };
    }
    case "safety_digits": {
      return { digits: await page.getByTestId("safety-digits").getAttribute("data-digits") };
    }
    case "click": {
      await page.getByTestId(String(c.testid)).click();
      return {};
    }
    case "wait_text": {
      await page.locator(`[data-testid=${String(c.testid)}]:text-is("${String(c.text)}")`).first().waitFor();
      return {};
    }
    case "elements": {
      const selector = typeof c.selector === "string" ? c.selector : `[data-testid="${String(c.testid)}"]`;
      await page.locator(selector).first().waitFor();
      return { elements: await page.locator(selector).evaluateAll((nodes) => nodes.map((n) => ({
        text: n.textContent, data: { ...(n as HTMLElement).dataset } }))) };
    }
    case "click_selector": {
      await page.locator(String(c.selector)).first().click();
      return {};
    }
    case "wait_selector": {
      await page.locator(String(c.selector)).first().waitFor();
      return {};
    }
    case "value": {
      const field = page.getByTestId(String(c.testid)).first();
      return { value: await field.inputValue(), visible: await field.isVisible() };
    }
    case "text": {
      return { text: await page.getByTestId(String(c.testid)).first().textContent() };
    }
    case "qr": {
      // The code as drawn (the SVG's viewBox and dark modules), rasterized here and read by
      // a decoder, which knows nothing of how the app drew it. Byte-mode text comes back
      // UTF-8 decoded: `same` compares it with the payload's bytes decoded the same way.
      const box = page.getByTestId(String(c.testid));
      await box.locator("svg").waitFor();
      const { payload, viewBox, d } = await box.evaluate((node) => ({
        payload: node.getAttribute("data-qr-payload") ?? "",
        viewBox: node.querySelector("svg")?.getAttribute("viewBox") ?? "",
        d: node.querySelector("svg path")?.getAttribute("d") ?? "" }));
      const side = Number(viewBox.split(" ")[2]);
      // One pixel a module: of 2,560 random link codes (every mask, versions 5 to 12) the
      // decoder refused about 1 % drawn 4 pixels a module, 0.1 % at 2, and none at 1.
      const scale = 1;
      const width = side * scale;
      const data = new Uint8Array(width * width * 3).fill(255);
      for (const [, x, y] of d.matchAll(/M(\d+) (\d+)h1v1h-1z/g)) {
        for (let dy = 0; dy < scale; dy++) {
          const start = ((Number(y) * scale + dy) * width + Number(x) * scale) * 3;
          data.fill(0, start, start + scale * 3);
        }
      }
      const decoded = decodeQR({ width, height: width, data });
      const bytes = /^([0-9a-f]{2})+$/.test(payload) ? Buffer.from(payload, "hex") : Buffer.from(payload, "utf8");
      return { payload, decoded, same: decoded === new TextDecoder().decode(bytes), modules: side - 8 };
    }
    case "screenshot": {
      await page.screenshot({ path: String(c.path) });
      return {};
    }
    case "conversations": {
      const items = await page.getByTestId("conversation").evaluateAll((nodes) => nodes.map((n) => ({
        account: n.getAttribute("data-account"), name: n.querySelector(".name")?.firstChild?.textContent,
        unread: Number(n.getAttribute("data-unread")) })));
      return { conversations: items };
    }
    case "wait_unread": {
      await page.locator(`[data-testid=conversation][data-account="${String(c.account)}"][data-unread="${String(c.count)}"]`)
        .waitFor();
      return {};
    }
    case "offline": {
      await context.setOffline(Boolean(c.offline));
      await page.locator(`[data-testid=connection][data-online=${String(!c.offline)}]`).waitFor();
      return {};
    }
    case "route": {
      // The page's requests to `path` (every path under it with `prefix`; of `method` when
      // given): "abort" fails them as a network error would; "patch" passes them on and
      // sets top-level fields of the JSON answer to those of `patch`. unroute_all ends them.
      const path = String(c.path);
      await page.route((url) => url.pathname === path || (c.prefix === true && url.pathname.startsWith(path)), async (r) => {
        if (typeof c.method === "string" && r.request().method() !== c.method) return r.fallback();
        if (c.action === "abort") return r.abort("failed");
        const response = await r.fetch();
        return r.fulfill({ response, json: { ...(await response.json() as object), ...(c.patch as object) } });
      });
      return {};
    }
    case "unroute_all": {
      await page.unrouteAll({ behavior: "ignoreErrors" });
      return {};
    }
    case "wait_gone": {
      await page.getByTestId(String(c.testid)).first().waitFor({ state: "detached" });
      return {};
    }
    case "webauthn":
      return webauthn(context, page, c);
    case "problems":
      return { problems };
    default:
      throw new Error(`unknown command ${c.cmd}`);
  }
}

const lines = createInterface({ input: process.stdin });
process.stdout.write(`${JSON.stringify({ ok: true, ready: true })}\n`);
for await (const line of lines) {
  if (!line.trim()) continue;
  let answer: Record<string, unknown>;
  try {
    const command = JSON.parse(line) as Command;
    answer = { ok: true, ...(await run(command)) };
    if (command.cmd === "close") {
      process.stdout.write(`${JSON.stringify(answer)}\n`);
      break;
    }
  } catch (error) {
    answer = { error: (error as Error).message.split("\n").slice(0, 6).join("\n") };
  }
  process.stdout.write(`${JSON.stringify(answer)}\n`);
}
process.exit(0);
