/**
 * The Cipherpost web app: sign up, unlock, conversations, a 1:1 chat with delivery
 * state, safety numbers. Plain DOM (./dom.ts); every private key stays in this browser's
 * IndexedDB, sealed under a key derived from the password.
 */

import { Client } from "../app/client.js";
import { RelayApi, RelayError, RelayUnavailable, type DeviceInfo } from "../app/api.js";
import { AttachmentError } from "../app/attachments.js";
import type { AttachmentInfo, ClientEvent, Contact, StoredMessage } from "../app/model.js";
import { IdentityNotTrusted } from "../app/outbox.js";
import { WrongKey } from "../app/store/crypto.js";
import { DeviceStore } from "../app/store/device.js";
import { IdbKv } from "../app/store/kv.js";
import { LinkError, linkUri, newLinkRequest, openEnvelope, provision } from "../app/linking.js";
import { h, replace } from "./dom.js";
import { groupPanel } from "./group.js";
import { messageParts, type MessageHooks, type MessageParts } from "./messages.js";
import { securityPage } from "./security.js";
import { askSecondFactor } from "./second_factor.js";
import { noteTyping, TYPING_SHOWN_MS } from "../app/settings.js";
import { watchRefusals } from "../app/refusals.js";
import { qrSvg } from "./qr.js";
import { recoverScreen } from "./recover.js";
import { holdTab, takeTab } from "./one_tab.js";
import { passkeyUnlockButton } from "./passkey.js";
import { importScreen, keyFileSection } from "./key_file.js";
import { joinFailed, newPasswordFields, showProgress } from "./new_device.js";
import { approveCodeForm, typedCodeLink } from "./code_link.js";
import { strengthSection } from "./about_strength.js";
import { released, watchPresses } from "./press.js";
import type { ProvisionMessage } from "../app/proto/cipherpost/app/v1/app_pb.js";

const DB_NAME = "cipherpost";
const root = document.getElementById("app")!;
watchPresses();

interface View {
  client: Client;
  selected: string | undefined;
  page: "chat" | "safety";
  screen: "chats" | "devices" | "about" | "security";
  online: boolean;
  /** Why the last message in the open chat was not sent (shown until the next send). */
  sendError: string;
}

let view: View | undefined;

function describe(error: unknown): string {
  if (error instanceof WrongKey) return "Wrong password.";
  if (error instanceof RelayError) {
    if (error.status === 409 && error.code === "username_taken") return "That username is taken.";
    if (error.status === 404) return "Nobody has that username.";
    if (error.status === 429) return "Too many attempts; wait a moment.";
    if (error.code === "second_factor_required") return "Not done: this needs a code from your authenticator.";
    if (error.code === "second_factor_invalid") return "Not done: that code is wrong, used already or expired.";
    return `The server refused: ${error.message}`;
  }
  if (error instanceof RelayUnavailable) return "The server cannot be reached.";
  if (error instanceof IdentityNotTrusted) return error.message;
  if (error instanceof LinkError) return error.message.charAt(0).toUpperCase() + error.message.slice(1) + ".";
  if (error instanceof RangeError) return error.message.charAt(0).toUpperCase() + error.message.slice(1) + ".";
  return "Something went wrong.";
}

function shortId(accountId: string): string {
  return `${accountId.slice(0, 8)}…`;
}

function nameOf(contact: Contact | undefined, accountId: string): string {
  return contact?.username ?? shortId(accountId);
}

// -- sign up and unlock ---------------------------------------------------------------

/**
 * The server a new account goes to: `?server=` of the page's address when given (a
 * separately hosted copy of this client), else the origin that served the page.
 */
function defaultServer(): string {
  return new URLSearchParams(location.search).get("server") ?? location.origin;
}

function signUp(): void {
  const username = h("input", { id: "username", name: "username", autocomplete: "username", required: true,
    minlength: "3", maxlength: "32", pattern: "[a-z0-9_][a-z0-9_.]*", "data-testid": "signup-username" });
  const password = newPasswordFields(["password", "confirm"], "Password", ["signup-password", "signup-confirm"]);
  const server = h("input", { id: "server", type: "url", required: true, value: defaultServer(),
    "data-testid": "signup-server", autocomplete: "off" });
  const invite = h("input", { id: "invite", autocomplete: "off", maxlength: "128", "data-testid": "signup-invite" });
  const error = h("p", { class: "error", role: "alert", "data-testid": "error" });
  const submit = h("button", { type: "submit", "data-testid": "signup-submit" }, "Create account");
  const form = h("form", {
    onsubmit: async (event: Event) => {
      event.preventDefault();
      error.textContent = password.problem() ?? "";
      if (error.textContent !== "") return;
      submit.disabled = true;
      submit.textContent = "Creating keys…";
      let kv: IdbKv | undefined;
      let joined = false;
      try {
        kv = await IdbKv.open(DB_NAME);
        const client = await Client.register(kv, server.value.trim(), username.value.trim().toLowerCase(),
          password.password.value, { invite: invite.value });
        joined = true;
        password.clear();
        await enter(client);
      } catch (e) {
        error.textContent = await joinFailed(e, describe, DB_NAME, kv, joined); // start over cleanly next time
        submit.disabled = joined;
        submit.textContent = "Create account";
      }
    },
  },
  h("label", { for: "username" }, "Username"), username,
  ...password.elements,
  h("label", { for: "invite" }, "Invite code (if the server asks for one)"), invite,
  h("details", { class: "advanced" }, h("summary", { "data-testid": "signup-advanced" }, "Server"),
    h("label", { for: "server" }, "Cipherpost server"), server,
    h("p", { class: "hint" }, "The server that relays your messages. Change it when this page is hosted apart "
      + "from the server (it must allow this page's origin).")),
  submit, error);
  replace(root, h("div", { class: "card", "data-testid": "signup" },
    h("h1", {}, "Create your Cipherpost account"),
    h("p", { class: "hint" }, "Already use Cipherpost on another device? ",
      h("a", { href: "#link", "data-testid": "start-link", onclick: (event: Event) => {
        event.preventDefault();
        linkThisBrowser();
      } }, "Link this browser to your account"), ". Lost your devices? ",
      h("a", { href: "#recover", "data-testid": "start-recover", onclick: (event: Event) => {
        event.preventDefault();
        recoverScreen(root, { dbName: DB_NAME, server: defaultServer(), describe, enter, back: signUp });
      } }, "Recover your account"), ". Have an encrypted key file? ",
      h("a", { href: "#import", "data-testid": "start-import", onclick: (event: Event) => {
        event.preventDefault();
        importScreen(root, { dbName: DB_NAME, server: defaultServer(), describe, enter, back: signUp });
      } }, "Import it"), "."),
    h("p", { class: "hint" }, "Your keys are made in this browser and never leave it. The password unlocks them "
      + "here; it is never sent anywhere and cannot be recovered."),
    form));
  username.focus();
}

/**
 * This browser as a new device of an existing account: show a link code for the other
 * device to read (paste it there on the Devices page, or `cipherpost link`), wait for
 * its provisioning message, then join and replay the conversations it sent.
 */
function linkThisBrowser(): void {
  const password = newPasswordFields(["password", "confirm"], "Password for this browser", ["link-password", "link-confirm"]);
  const server = h("input", { id: "server", type: "url", required: true, value: defaultServer(),
    "data-testid": "link-server", autocomplete: "off" });
  const error = h("p", { class: "error", role: "alert", "data-testid": "error" });
  const status = h("div", { "data-testid": "link-status" });
  const submit = h("button", { type: "submit", "data-testid": "link-start" }, "Show link code");
  let byCode = false; // the second button: a code to type instead of one to scan or paste
  const submitCode = h("button", { type: "submit", class: "secondary", "data-testid": "link-start-code",
    onclick: () => { byCode = true; } }, "Use a code to type instead");
  const form = h("form", {
    onsubmit: async (event: Event) => {
      event.preventDefault();
      error.textContent = password.problem() ?? "";
      if (error.textContent !== "") return;
      submit.disabled = submitCode.disabled = true;
      let kv: IdbKv | undefined;
      let joined = false;
      try {
        const api = new RelayApi(server.value.trim());
        const message = byCode ? await typedCodeLink(api, status) : await scannedLink(api, status);
        const progress = showProgress(status, "Linked. Loading your conversations…", "link-progress");
        kv = await IdbKv.open(DB_NAME);
        const client = await Client.link(kv, api.server, password.password.value, message,
          { progress: progress.steps, historyProgress: progress.history });
        joined = true;
        password.clear();
        await enter(client);
      } catch (e) {
        error.textContent = await joinFailed(e, describe, DB_NAME, kv, joined);
        submit.disabled = submitCode.disabled = joined;
        byCode = false;
      }
    },
  },
  ...password.elements,
  h("details", { class: "advanced" }, h("summary", {}, "Server"), h("label", { for: "server" }, "Cipherpost server"), server),
  submit, submitCode, error);
  replace(root, h("div", { class: "card", "data-testid": "link" },
    h("h1", {}, "Link this browser"),
    h("p", { class: "hint" }, "This browser becomes another device of your account: your other device sends it "
      + "your identity key, contacts and conversations, encrypted to this page only."),
    form, status,
    h("p", { class: "hint" }, h("a", { href: "#", onclick: (event: Event) => { event.preventDefault(); signUp(); } },
      "Create a new account instead"))));
  password.password.focus();
}

/** The link code to scan or paste (a QR code and text), and what the other device sealed to it. */
async function scannedLink(api: RelayApi, status: HTMLElement): Promise<ProvisionMessage> {
  const address = await api.openMailbox();
  const { request, privateKey } = newLinkRequest(api.server, address);
  const uri = linkUri(request);
  replace(status, h("p", {}, "On your other device, open Devices → Link a new device and scan or paste this code:"),
    h("div", { class: "qr-box", "data-testid": "link-qr", "data-qr-payload": uri }, qrSvg(uri, "Link code as a QR code")),
    h("code", { class: "digest", "data-testid": "link-uri" }, uri),
    h("p", { class: "hint", "data-testid": "link-waiting" }, "Waiting for your other device…"));
  let sealed: Uint8Array | undefined;
  const deadline = Date.now() + 10 * 60_000;
  while (sealed === undefined && Date.now() < deadline) {
    sealed = await api.requestBytes("GET", `/v1/provisioning/${address}?wait=25`, false, 1024 * 1024, 35_000);
  }
  if (sealed === undefined) throw new LinkError("no device sent the link in time: start again");
  return openEnvelope(request, privateKey, sealed);
}

function unlock(): void {
  const password = h("input", { id: "password", type: "password", autocomplete: "current-password", required: true,
    "data-testid": "unlock-password" });
  const error = h("p", { class: "error", role: "alert", "data-testid": "error" });
  const submit = h("button", { type: "submit", "data-testid": "unlock-submit" }, "Unlock");
  const form = h("form", {
    onsubmit: async (event: Event) => {
      event.preventDefault();
      error.textContent = "";
      submit.disabled = true;
      submit.textContent = "Unlocking…";
      try {
        const client = await Client.open(await IdbKv.open(DB_NAME), password.value);
        password.value = "";
        await enter(client);
      } catch (e) {
        error.textContent = describe(e);
        submit.disabled = false;
        submit.textContent = "Unlock";
        password.select();
      }
    },
  }, h("label", { for: "password" }, "Password"), password, submit,
  passkeyUnlockButton(() => IdbKv.open(DB_NAME), enter, error, describe), error);
  replace(root, h("div", { class: "card", "data-testid": "unlock" }, h("h1", {}, "Unlock Cipherpost"),
    h("p", { class: "hint" }, "Enter the password you chose for this browser."), form));
  password.focus();
}

// -- the main screen ------------------------------------------------------------------

async function enter(client: Client): Promise<void> {
  if (view !== undefined) {
    // Unlocked twice (the password while a passkey prompt was still open): the first runs.
    client.stop();
    client.store.kv.close();
    return;
  }
  view = { client, selected: undefined, page: "chat", screen: "chats", online: false, sendError: "" };
  client.api.secondFactor = askSecondFactor; // a protected action asks for the code, then goes on
  watchRefusals(client, () => (view?.screen === "security" ? render() : undefined)); // kept for the security page
  client.on((event) => void onEvent(event));
  window.addEventListener("offline", () => client.networkChanged(false));
  window.addEventListener("online", () => client.networkChanged(true));
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && view?.selected !== undefined && view.page === "chat") {
      void client.markRead(view.selected).then(render);
    }
  });
  client.start();
  void client.takeArchive().then((n) => (n > 0 ? render() : undefined)).catch(() => undefined);
  void client.resumeHistory().then((n) => (n > 0 ? render() : undefined)).catch(() => undefined);
  setInterval(() => void client.expireMessages().catch(() => undefined), 1000);
  await render();
}

/** How a refused action is named to the user. */
const ACTION_NAME = { edit: "Your edit", delete: "Your deletion", reaction: "Your reaction" } as const;

/** Contacts typing to us, until when (ms): their typing indicators (../app/settings.ts). */
const typingUntil = new Map<string, number>();

async function onEvent(event: ClientEvent): Promise<void> {
  if (view === undefined) return;
  if (event.kind === "connection") view.online = event.online;
  if (event.kind === "message" && !event.message.outgoing) typingUntil.delete(event.message.author);
  if (event.kind === "typing") {
    if (event.started) typingUntil.set(event.sender, Date.now() + TYPING_SHOWN_MS);
    else typingUntil.delete(event.sender);
    if (event.sender === view.selected) {
      await render();
      if (event.started) setTimeout(() => void render(), TYPING_SHOWN_MS + 100);
    }
  }
  if (event.kind === "message" && event.message.conversation === view.selected && !event.message.outgoing
    && view.page === "chat" && document.visibilityState === "visible") {
    await view.client.markRead(view.selected);
  }
  if (event.kind === "action_failed") {
    // sent from the queue (typed offline): the chat says so, or the user would never know
    view.sendError = `${ACTION_NAME[event.action]} could not be sent: ${describe(event.error)}`;
    await render();
    return;
  }
  if (event.kind === "message" || event.kind === "status" || event.kind === "connection"
    || event.kind === "identity_changed" || event.kind === "seen" || event.kind === "group"
    || event.kind === "timer" || event.kind === "expired" || event.kind === "reaction"
    || (event.kind === "account_notice" && view.screen === "security")) {
    await render();
  }
}

let rendering: Promise<void> = Promise.resolve();
/** A redraw queued behind the one under way: later calls share it (one wait for a press, not one each). */
let queuedDraw: Promise<void> | undefined;

function render(): Promise<void> {
  if (queuedDraw !== undefined) return queuedDraw;
  const next = (): Promise<void> => {
    queuedDraw = undefined;
    return draw();
  };
  queuedDraw = rendering = rendering.then(next, next);
  return queuedDraw;
}

async function draw(): Promise<void> {
  if (view === undefined) return;
  const { client } = view;
  const contacts = await client.conversations();
  const aside = h("aside", {},
    h("header", {},
      h("span", { class: view.online ? "dot online" : "dot", title: view.online ? "connected" : "offline",
        "data-testid": "connection", "data-online": String(view.online) }),
      h("strong", { "data-testid": "me" }, client.username),
      h("button", { class: "secondary small", "data-testid": "open-devices",
        onclick: () => { view!.screen = "devices"; void render(); } }, "Devices"),
      h("button", { class: "secondary small", "data-testid": "open-security",
        onclick: () => { view!.screen = "security"; void render(); } }, "Security"),
      h("button", { class: "secondary small", "data-testid": "open-about",
        onclick: () => { view!.screen = "about"; void render(); } }, "About")),
    newChatForm(),
    newGroupForm(),
    h("ul", { class: "conversations", "data-testid": "conversations" }, ...contacts.map((c) => h("li", {},
      h("button", {
        class: c.accountId === view!.selected ? "active" : undefined, "data-testid": "conversation",
        "data-account": c.accountId, "data-unread": String(c.accountId === view!.selected ? 0 : c.unread),
        onclick: () => void open(c.accountId),
      },
      h("span", { class: "name" }, nameOf(c, c.accountId),
        c.unread > 0 && c.accountId !== view!.selected ? h("span", { class: "badge" }, String(c.unread)) : false),
      h("span", { class: "preview" }, c.lastText || " "))))));
  const main = view.screen === "devices" ? await devicesPage()
    : view.screen === "about" ? await aboutPage()
    : view.screen === "security" ? await securityPage(client, describe, backToChats(), accountDeleted)
    : view.selected === undefined
    ? h("section", { class: "chat" }, h("p", { class: "empty" }, "Start a conversation with a username."))
    : view.page === "safety" ? await safetyPage(view.selected) : await chat(view.selected);
  // A click under way is not cut by the swap (./press.ts); the page says it holds a redraw.
  await released((held) => { root.toggleAttribute("data-redraw-held", held); });
  // What the user typed is read right before the swap, after every await above: a message
  // arriving while they type a username or a draft redraws the page without losing it.
  const typed = typedFields();
  replace(root, h("div", { class: "layout", "data-testid": "inbox" }, aside, main));
  typed.restore();
  const list = document.querySelector("ol.messages");
  if (list !== null) list.scrollTop = list.scrollHeight;
}

/** The inbox's fields that hold typing in progress, kept across a redraw: the composer's
 * draft, the new-chat username, the new-group form (with whether it is open), a
 * message's new text while it is edited and the devices page's link code. */
const TYPED_FIELDS = ["composer-input", "new-chat-username", "new-group-title", "new-group-members", "edit-input",
  "link-code"];

function typedFields(): { restore: () => void } {
  const field = (id: string) => document.querySelector(`[data-testid=${id}]`) as HTMLInputElement | null;
  const values = new Map(TYPED_FIELDS.map((id) => [id, field(id)?.value ?? ""]));
  const focused = document.activeElement?.getAttribute("data-testid") ?? "";
  const active = document.activeElement;
  const groupOpen = (document.querySelector("details.new-group") as HTMLDetailsElement | null)?.open ?? false;
  return {
    restore: () => {
      for (const [id, value] of values) {
        const input = field(id);
        if (input !== null && value !== "") input.value = value;
      }
      const details = document.querySelector("details.new-group") as HTMLDetailsElement | null;
      if (details !== null && groupOpen) details.open = true;
      if (TYPED_FIELDS.includes(focused)) field(focused)?.focus();
      // a page kept across redraws (the security page) keeps the field being typed in
      else if (active instanceof HTMLElement && active.isConnected && document.activeElement !== active) active.focus();
    },
  };
}

function newChatForm(): HTMLFormElement {
  const input = h("input", { placeholder: "username", "aria-label": "Username to write to",
    "data-testid": "new-chat-username", autocomplete: "off" });
  const error = h("p", { class: "error", role: "alert", "data-testid": "new-chat-error" });
  const form = h("form", {
    class: "new-chat",
    onsubmit: async (event: Event) => {
      event.preventDefault();
      try {
        const accountId = await view!.client.lookup(input.value);
        input.value = ""; // kept across redraws while typed; done with once the chat opens
        await open(accountId);
      } catch (e) {
        error.textContent = describe(e);
        form.after(error);
      }
    },
  }, input, h("button", { type: "submit", "data-testid": "new-chat-submit" }, "Chat"));
  return form;
}

function newGroupForm(): HTMLElement {
  const title = h("input", { placeholder: "group name", "aria-label": "Group name", "data-testid": "new-group-title",
    autocomplete: "off", maxlength: "100" });
  const members = h("input", { placeholder: "usernames, comma-separated", "aria-label": "Members",
    "data-testid": "new-group-members", autocomplete: "off" });
  const error = h("p", { class: "error", role: "alert", "data-testid": "new-group-error" });
  const submit = h("button", { type: "submit", "data-testid": "new-group-submit" }, "Create group");
  const form = h("form", {
    class: "new-group",
    onsubmit: async (event: Event) => {
      event.preventDefault();
      error.textContent = "";
      submit.disabled = true;
      try {
        const names = members.value.split(/[\s,]+/).filter(Boolean);
        const conversation = await view!.client.createGroup(title.value, names);
        title.value = "";
        members.value = "";
        form.closest("details")?.removeAttribute("open");
        await open(conversation);
      } catch (e) {
        error.textContent = describe(e);
        submit.disabled = false;
      }
    },
  }, title, members, submit, error);
  return h("details", { class: "new-group" }, h("summary", { "data-testid": "new-group" }, "New group"), form);
}

async function open(accountId: string): Promise<void> {
  view!.selected = accountId;
  view!.page = "chat";
  view!.screen = "chats";
  view!.sendError = "";
  await view!.client.markRead(accountId);
  await render();
  (document.querySelector("[data-testid=composer-input]") as HTMLInputElement | null)?.focus();
}

const STATUS_TEXT: Record<string, string> = {
  sending: "sending…", sent: "sent ✓", delivered: "delivered ✓✓", read: "read ✓✓", failed: "not sent", received: "",
};

function time(ms: number): string {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

async function chat(accountId: string): Promise<HTMLElement> {
  const { client } = view!;
  const contact = await client.contact(accountId);
  const messages = await client.messages(accountId);
  const safety = await client.safetyNumber(accountId);
  const error = h("p", { class: "error", role: "alert", "data-testid": "send-error" }, view!.sendError);
  const input = h("input", { placeholder: "Message", "aria-label": "Message", "data-testid": "composer-input",
    autocomplete: "off", maxlength: "16384",
    oninput: () => void noteTyping(client, accountId, input.value === "") });
  const composer = h("form", {
    class: "composer",
    onsubmit: async (event: Event) => {
      event.preventDefault();
      const text = input.value;
      if (text.trim() === "") return;
      input.value = "";
      view!.sendError = "";
      void noteTyping(client, accountId, true);
      try {
        await client.sendText(accountId, text);
      } catch (e) {
        view!.sendError = describe(e); // the message stays in the chat, marked "not sent"
      }
      await render();
    },
  }, attachButton(accountId), input, h("button", { type: "submit", "data-testid": "composer-send" }, "Send"));
  const group = await client.group(accountId);
  const timer = await client.expireTimer(accountId);
  return h("section", { class: "chat", "data-testid": "chat", "data-account": accountId },
    h("header", {}, h("h2", { "data-testid": "chat-title" }, nameOf(contact, accountId)),
      (typingUntil.get(accountId) ?? 0) > Date.now() ? h("span", { class: "typing", "data-testid": "typing" }, "typing…") : false,
      timerSelect(accountId, timer),
      group !== undefined
        ? false
        : h("button", { class: "secondary", "data-testid": "open-safety", disabled: safety === undefined,
          onclick: () => { view!.page = "safety"; void render(); } }, "Safety number")),
    group !== undefined ? await groupPanel(client, accountId, group, { describe, nameOf, changed: render }) : false,
    safety?.changed ? h("div", { class: "banner", "data-testid": "key-changed" },
      h("span", { "data-testid": "key-changed-text" },
        `${nameOf(contact, accountId)}'s safety number changed. Compare it before you send.`),
      h("button", { "data-testid": "review-key-change", onclick: () => { view!.page = "safety"; void render(); } },
        "Review")) : false,
    timer > 0 ? h("p", { class: "notice", "data-testid": "timer-notice", "data-seconds": String(timer) },
      `Disappearing messages: ${timerName(timer)} after reading.`) : false,
    h("ol", { class: "messages", "data-testid": "messages" }, ...await Promise.all(messages.map(async (m) =>
      bubble(m, group !== undefined && !m.outgoing ? nameOf(await client.contact(m.author), m.author) : undefined,
        await messageParts(client, m, messageHooks))))),
    error, composer);
}

const TIMERS: [number, string][] = [[0, "off"], [10, "10 seconds"], [60, "1 minute"], [3600, "1 hour"],
  [86_400, "1 day"], [604_800, "1 week"]];

function timerName(seconds: number): string {
  return TIMERS.find(([s]) => s === seconds)?.[1] ?? `${seconds} seconds`;
}

function timerSelect(conversation: string, current: number): HTMLElement {
  const choices = TIMERS.some(([s]) => s === current) ? TIMERS : [...TIMERS, [current, timerName(current)] as [number, string]];
  const select = h("select", { "aria-label": "Disappearing messages", "data-testid": "expire-timer",
    title: "Disappearing messages",
    onchange: async () => {
      view!.sendError = "";
      try {
        await view!.client.setExpireTimer(conversation, Number(select.value));
      } catch (e) {
        view!.sendError = describe(e);
      }
      await render();
    } }, ...choices.map(([seconds, name]) => h("option", { value: String(seconds), selected: seconds === current },
    seconds === 0 ? "⏱ off" : `⏱ ${name}`)));
  return select;
}

function attachButton(conversation: string): HTMLElement {
  const file = h("input", { type: "file", class: "hidden-file", id: "attach", "data-testid": "attach-input",
    onchange: async () => {
      const chosen = file.files?.[0];
      file.value = "";
      if (chosen === undefined) return;
      view!.sendError = "";
      try {
        await view!.client.sendFile(conversation, new Uint8Array(await chosen.arrayBuffer()), chosen.name,
          chosen.type);
      } catch (e) {
        view!.sendError = describe(e);
      }
      await render();
    } });
  return h("span", { class: "attach" }, file,
    h("label", { for: "attach", class: "button secondary", title: "Attach a file", "data-testid": "attach" }, "📎"));
}

function size(bytes: number): string {
  return bytes < 1024 ? `${bytes} B` : bytes < 1024 * 1024 ? `${(bytes / 1024).toFixed(1)} KB`
    : `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

function attachmentView(attachment: AttachmentInfo): HTMLElement {
  const error = h("span", { class: "error", "data-testid": "attachment-error" });
  const name = attachment.fileName || "file";
  const button = h("button", { class: "secondary small", "data-testid": "download",
    onclick: async () => {
      error.textContent = "";
      button.disabled = true;
      try {
        const data = await view!.client.download(attachment);
        const url = URL.createObjectURL(new Blob([data as Uint8Array<ArrayBuffer>],
          { type: "application/octet-stream" }));
        const link = h("a", { href: url, download: name });
        link.click();
        setTimeout(() => URL.revokeObjectURL(url), 60_000);
      } catch (e) {
        error.textContent = e instanceof AttachmentError ? "This file is damaged or was changed." : describe(e);
      }
      button.disabled = false;
    } }, "Download");
  return h("span", { class: "attachment", "data-testid": "attachment", "data-name": name },
    `📎 ${name} (${size(attachment.size)}) `, button, error);
}

/** What a message's reactions and actions need from the page (./messages.ts). */
const messageHooks: MessageHooks = {
  nameOf,
  changed: async () => {
    view!.sendError = "";
    await render();
  },
  failed: async (error) => {
    view!.sendError = describe(error);
    await render();
  },
};

function bubble(message: StoredMessage, author: string | undefined, parts: MessageParts): HTMLElement {
  const waiting = message.status === "sending" && !view!.online;
  const status = message.outgoing ? (waiting ? "waiting for the connection" : STATUS_TEXT[message.status] ?? "") : "";
  return h("li", { class: message.outgoing ? "mine" : undefined, "data-testid": "message",
    "data-status": message.status, "data-outgoing": String(message.outgoing),
    "data-read": message.outgoing ? undefined : String(message.read === true),
    "data-edited": message.editedAt === undefined ? undefined : "true",
    "data-expires": message.expireTimer ? String(message.expireTimer) : undefined },
  author === undefined ? false : h("span", { class: "author", "data-testid": "author" }, author),
  ...(message.attachments ?? []).map(attachmentView),
  parts.edit || h("span", { class: "text" }, message.text),
  h("span", { class: "meta" }, [time(message.outgoing ? message.timestamp : message.receivedAt),
    message.editedAt === undefined ? "" : "edited", status].filter(Boolean).join(" · ")), parts.below);
}

const toHex = (bytes: Uint8Array): string => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

async function safetyPage(accountId: string): Promise<HTMLElement> {
  const { client } = view!;
  const contact = await client.contact(accountId);
  const safety = await client.safetyNumber(accountId);
  const back = h("button", { class: "secondary", "data-testid": "close-safety",
    onclick: () => { view!.page = "chat"; void render(); } }, "Back to chat");
  if (safety === undefined) {
    return h("section", { class: "chat safety" }, h("p", {}, "No safety number yet: exchange a message first."), back);
  }
  const groups = safety.digits.match(/.{5}/g) ?? [];
  const name = nameOf(contact, accountId);
  return h("section", { class: "chat safety", "data-testid": "safety" },
    h("h2", {}, `Safety number with ${name}`),
    h("p", {}, `Compare these 60 digits with the ones ${name} sees (in person or on a call you trust). `
      + "If they match, nobody is in the middle."),
    h("div", { class: "digits", "data-testid": "safety-digits", "data-digits": safety.digits },
      ...groups.map((g) => h("span", {}, g))),
    h("div", { class: "qr-box", "data-testid": "safety-qr", "data-qr-payload": toHex(safety.scannable) },
      qrSvg(safety.scannable, "Safety number as a QR code")),
    h("p", { class: safety.verified ? "state verified" : "state", "data-testid": "safety-state" },
      safety.changed ? "Changed: not accepted yet." : safety.verified ? "Verified." : "Not verified."),
    safety.verified ? false : h("button", { "data-testid": "mark-verified",
      onclick: async () => { await client.trust(accountId, true); await render(); } }, "Mark as verified"),
    safety.changed ? h("button", { class: "secondary", "data-testid": "accept-change",
      onclick: async () => { await client.trust(accountId, false); await render(); } }, "Accept without verifying") : false,
    back);
}

/**
 * The account is deleted on the relay and the client stopped: delete this browser's store
 * (the whole IndexedDB database) and say so. Nothing of the account is left to unlock.
 */
async function accountDeleted(): Promise<void> {
  view = undefined;
  let wiped = true;
  await IdbKv.destroy(DB_NAME).catch(() => { wiped = false; });
  replace(root, h("div", { class: "card", "data-testid": "account-deleted", "data-wiped": String(wiped) },
    h("h1", {}, "Your account is deleted"),
    h("p", {}, wiped ? "The server deleted everything it held of it, and this browser deleted its keys and messages."
      : "The server deleted everything it held of it. This browser could not delete its data: clear this site's "
        + "data in the browser's settings."),
    h("button", { "data-testid": "start-again", onclick: () => location.reload() }, "Start again")));
}

// -- devices and about ----------------------------------------------------------------

function backToChats(): HTMLButtonElement {
  return h("button", { class: "secondary", "data-testid": "close-page",
    onclick: () => { view!.screen = "chats"; void render(); } }, "Back to chats");
}

function day(ms: number): string {
  return ms === 0 ? "never" : new Date(ms).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
}

async function devicesPage(): Promise<HTMLElement> {
  const { client } = view!;
  const error = h("p", { class: "error", role: "alert", "data-testid": "devices-error" });
  let devices: DeviceInfo[] = [];
  try {
    devices = await client.devices();
  } catch (e) {
    error.textContent = describe(e);
  }
  const code = h("input", { placeholder: "cipherpost://link?…", "aria-label": "Link code of the new device",
    "data-testid": "link-code", autocomplete: "off" });
  const link = h("form", {
    class: "link",
    onsubmit: async (event: Event) => {
      event.preventDefault();
      error.textContent = "";
      try {
        await provision(client, code.value);
        code.value = "";
        linkState.textContent = "Sent. The new device finishes joining by itself.";
      } catch (e) {
        error.textContent = describe(e);
      }
    },
  }, code, h("button", { type: "submit", "data-testid": "link-submit" }, "Link"));
  const linkState = h("p", { class: "hint", "data-testid": "link-state" });
  return h("section", { class: "chat page", "data-testid": "devices" },
    h("h2", {}, "Your devices"),
    h("p", { class: "hint" }, "Every device of your account gets a copy of what you send and receive. "
      + "Remove one you no longer use or do not recognise: it can no longer read new messages."),
    h("ul", { class: "devices" }, ...devices.map((d) => {
      const self = d.deviceId === client.deviceId;
      const remove = h("button", { class: "secondary", "data-testid": "remove-device",
        onclick: async () => {
          if (remove.dataset.confirm !== "yes") {
            remove.dataset.confirm = "yes";
            remove.textContent = "Really remove?";
            return;
          }
          try {
            await client.removeDevice(d.deviceId);
          } catch (e) {
            error.textContent = describe(e);
            return;
          }
          await render();
        } }, "Remove");
      return h("li", { "data-testid": "device", "data-device": String(d.deviceId), "data-self": String(self) },
        h("strong", {}, d.name || `Device ${d.deviceId}`), self ? h("span", { class: "badge" }, "this browser") : false,
        h("span", { class: "meta" }, `added ${day(d.createdAt)} · last seen ${day(d.lastSeen)}`),
        self ? false : remove);
    })),
    h("h3", {}, "Link a new device"),
    h("p", { class: "hint" }, "On the new device, choose to link to an existing account and paste its link code here. "
      + "Only link a device you hold: it gets your identity key."),
    link, linkState, approveCodeForm(client, describe), await keyFileSection(client, describe), error, backToChats());
}

/** SHA-256 of the app's code as this browser received it (SRI-checked against index.html). */
async function bundleDigest(): Promise<string> {
  const script = document.querySelector<HTMLScriptElement>("script[type=module][integrity]");
  const url = script?.src ?? new URL("app.js", location.href).href;
  const response = await fetch(url, { integrity: script?.integrity ?? "", cache: "force-cache", credentials: "omit" });
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", await response.arrayBuffer()));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function aboutPage(): Promise<HTMLElement> {
  const { client } = view!;
  let digest: string;
  try {
    digest = await bundleDigest();
  } catch {
    digest = "could not be computed";
  }
  return h("section", { class: "chat page", "data-testid": "about" },
    h("h2", {}, "About Cipherpost"),
    h("p", {}, "Your keys are made and kept in this browser, sealed under your password. The server relays "
      + "encrypted messages and never sees a password, a private key or a message."),
    h("h3", {}, "Check the code you are running"),
    h("p", {}, "SHA-256 of app.js as this browser received it:"),
    h("code", { class: "digest", "data-testid": "bundle-sha256" }, digest),
    ...strengthSection(),
    h("p", { class: "hint" }, "The build is reproducible: `cd web && npm ci && npm run --silent hash` builds the "
      + "published sources and prints the same hash, which web/README.md lists. A different hash means this "
      + "server delivers other code."),
    h("h3", {}, "Server"),
    h("p", {}, "This account lives on ", h("code", { "data-testid": "about-server" }, client.server), "."),
    backToChats());
}

// -- start ----------------------------------------------------------------------------

async function boot(held = false): Promise<void> {
  if (!held && !(await holdTab(DB_NAME))) {
    replace(root, h("div", { class: "card", "data-testid": "other-tab" }, h("h1", {}, "Cipherpost is open in another tab"),
      h("p", {}, "It runs in one tab at a time, so that two tabs never overwrite each other's keys."),
      h("button", { "data-testid": "use-here", onclick: () => void takeTab(DB_NAME).then(() => boot(true)) }, "Use it here")));
    return;
  }
  try {
    const kv = await IdbKv.open(DB_NAME);
    const exists = await DeviceStore.exists(kv);
    kv.close();
    if (exists) unlock();
    else signUp();
  } catch {
    replace(root, h("div", { class: "card" }, h("h1", {}, "Cipherpost cannot start"),
      h("p", {}, "This browser does not let the page store data (private mode?).")));
  }
}

void boot();
