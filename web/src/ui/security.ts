/**
 * The account security page: login notices (what the relay told every device of the
 * account: a new device, a recovery, an identity reset, second-factor changes), the
 * second factor (status; enrol an authenticator app with its secret and a first code,
 * then the recovery codes, shown once), and the privacy dashboard (what the relay holds
 * about the account). Plain DOM, text only as text nodes.
 */

import {
  beginTwoFactor, confirmTwoFactor, dayText, deleteAccount, deleteServerHistory, disableTwoFactor, exportServerData,
  newRecoveryCodes, privacy, twoFactorStatus, type Privacy, type TwoFactorStatus,
} from "../app/account.js";
import type { Client } from "../app/client.js";
import { describeNotice } from "../app/notices.js";
import { describeRefusal, sealedRefusals } from "../app/refusals.js";
import { defaultExpireTimer, setDefaultExpireTimer } from "../app/retention.js";
import { serverHistoryOn, turnServerHistoryOn } from "../app/server_history.js";
import { loadSettings, saveSettings, type Settings } from "../app/settings.js";
import { h } from "./dom.js";
import { passkeySection } from "./passkey.js";
import { recoverySecretsSection } from "./recovery_secrets.js";

function size(bytes: number): string {
  return bytes < 1024 ? `${bytes} B` : bytes < 1024 * 1024 ? `${(bytes / 1024).toFixed(1)} KiB`
    : `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

async function noticesSection(client: Client): Promise<HTMLElement> {
  const notices = await client.notices();
  return h("div", {},
    h("h3", {}, "Login notices"),
    h("p", { class: "hint" }, "The server tells every device of your account when a device joins, the account is "
      + "restored or its keys or second factor change. If you did not do it, remove the device and change your "
      + "recovery secrets."),
    notices.length === 0 ? h("p", { class: "empty", "data-testid": "no-notices" }, "No notices.")
      : h("ul", { class: "notices", "data-testid": "notices" }, ...notices.map((n) =>
        h("li", { "data-testid": "notice", "data-kind": n.kind }, describeNotice(n)))));
}

function twoFactorSection(client: Client, describe: (e: unknown) => string): HTMLElement {
  const state = h("p", { "data-testid": "2fa-state" }, "…");
  const error = h("p", { class: "error", role: "alert", "data-testid": "2fa-error" });
  const body = h("div", {});
  const show = (status: TwoFactorStatus) => {
    state.textContent = status.enabled
      ? `On: codes from your authenticator protect linking devices, recovery changes, identity resets and `
        + `deleting the account. ${status.recoveryCodesLeft} recovery codes left.`
      : "Off.";
    state.dataset.enabled = String(status.enabled);
    state.dataset.codesLeft = String(status.recoveryCodesLeft);
    if (!status.enabled) body.replaceChildren(startButton());
    else if (body.querySelector("[data-testid=2fa-recovery-codes]") === null) body.replaceChildren(manage());
  };
  const showCodes = (codes: string[]) => h("div", {},
    h("p", {}, "Keep these recovery codes somewhere safe. Each works once, in place of a code, if you lose "
      + "the authenticator. They are not shown again."),
    h("ul", { class: "codes", "data-testid": "2fa-recovery-codes" }, ...codes.map((c) => h("li", {}, h("code", {}, c)))),
    h("button", { class: "secondary", "data-testid": "2fa-codes-done", onclick: () => body.replaceChildren(manage()) },
      "I have saved them"));
  // Both ask for a code from the authenticator (or a recovery code) through the api's prompt.
  const manage = () => h("div", { class: "buttons" },
    h("button", { class: "secondary", "data-testid": "2fa-new-codes", onclick: async () => {
      error.textContent = "";
      try {
        body.replaceChildren(showCodes(await newRecoveryCodes(client.api)));
        show(await twoFactorStatus(client.api));
      } catch (e) {
        error.textContent = describe(e);
      }
    } }, "New recovery codes"),
    h("button", { class: "secondary", "data-testid": "2fa-disable", onclick: async () => {
      error.textContent = "";
      try {
        await disableTwoFactor(client.api);
        show(await twoFactorStatus(client.api));
      } catch (e) {
        error.textContent = describe(e);
      }
    } }, "Turn off"));
  const startButton = () => h("button", { "data-testid": "2fa-start", onclick: async () => {
    error.textContent = "";
    try {
      enrol(await beginTwoFactor(client.api));
    } catch (e) {
      error.textContent = describe(e);
    }
  } }, "Turn on");
  const enrol = (enrolment: { secret: string; uri: string }) => {
    const code = h("input", { inputmode: "numeric", autocomplete: "one-time-code", maxlength: "7",
      "aria-label": "Code from the authenticator", "data-testid": "2fa-code" });
    const form = h("form", { class: "link", onsubmit: async (event: Event) => {
      event.preventDefault();
      error.textContent = "";
      try {
        body.replaceChildren(showCodes(await confirmTwoFactor(client.api, code.value)));
        show(await twoFactorStatus(client.api));
      } catch (e) {
        error.textContent = describe(e);
      }
    } }, code, h("button", { type: "submit", "data-testid": "2fa-confirm" }, "Confirm"));
    body.replaceChildren(
      h("p", {}, "Add this key to your authenticator app (it takes it typed, or as the link below), then type the "
        + "6-digit code it shows."),
      h("code", { class: "digest", "data-testid": "2fa-secret" }, enrolment.secret),
      h("code", { class: "digest", "data-testid": "2fa-uri" }, enrolment.uri),
      form);
  };
  void twoFactorStatus(client.api).then(show, (e) => { error.textContent = describe(e); });
  return h("div", {}, h("h3", {}, "Second factor"), state, body, error);
}

function privacySection(client: Client, describe: (e: unknown) => string,
  onDeleted: () => Promise<void>): HTMLElement {
  const out = h("div", { "data-testid": "privacy" }, h("p", {}, "…"));
  const show = (p: Privacy) => {
    const devices = h("ul", { class: "devices" }, ...p.devices.map((d) => h("li", {
      "data-testid": "privacy-device", "data-device": String(d.deviceId), "data-last-seen-day": String(d.lastSeenDay),
      "data-queued": String(d.queuedMessages) },
    h("strong", {}, d.name || `Device ${d.deviceId}`),
    h("span", { class: "meta" }, `added ${dayText(d.createdDay)} · last seen ${dayText(d.lastSeenDay)} · `
      + `${d.queuedMessages} queued messages (${size(d.queuedBytes)}) · ${d.oneTimePrekeys} one-time and `
      + `${d.kyberPrekeys} post-quantum prekeys`))));
    const r = p.retention;
    out.replaceChildren(
      h("p", {}, `Account ${p.username ? `"${p.username}" ` : ""}created ${dayText(p.createdDay)}.`),
      h("h4", {}, "Devices"), devices,
      h("p", { "data-testid": "privacy-history", "data-entries": String(p.historyEntries) },
        p.serverHistory ? `Stored history: ${p.historyEntries} entries (${size(p.historyBytes)}), encrypted.`
          : "No history stored on the server."),
      h("p", { "data-testid": "privacy-2fa", "data-enabled": String(p.twoFactorEnabled) },
        p.twoFactorEnabled ? `Second factor on, ${p.twoFactorRecoveryCodes} recovery codes left.` : "No second factor."),
      h("p", {}, `Attachments: ${p.attachments}.`),
      h("p", { "data-testid": "privacy-retention" }, `Undelivered messages are kept ${r.queuedMessageDays} days, `
        + `attachments ${r.attachmentDays} days; ${r.idleDeviceDays > 0 ? `devices unused for ${r.idleDeviceDays} days are `
        + "removed" : "idle devices are kept"}; history ${r.historyDays === undefined ? "until you delete it"
        : `for ${r.historyDays} days`}.`),
      h("h4", {}, "Account events"),
      h("ul", { class: "audit", "data-testid": "privacy-audit" }, ...p.audit.map((e) => h("li", {
        "data-testid": "audit-event", "data-event": e.event },
      `${new Date(e.at).toISOString().slice(0, 16).replace("T", " ")} UTC: ${e.event.replace(/_/g, " ")}`
        + (e.deviceId === undefined ? "" : ` (device ${e.deviceId})`)))));
  };
  const load = () => privacy(client.api).then(show, (e) => {
    out.replaceChildren(h("p", { class: "error", role: "alert" }, describe(e)));
  });
  void load();
  return h("div", {}, h("h3", {}, "What the server holds"),
    h("p", { class: "hint" }, "Never a message's content, a password or a private key: this is all of it."), out,
    actionsSection(client, describe, load, onDeleted));
}

/** A button that asks "Really …?" on the first click and acts on the second. */
function confirmed(testid: string, label: string, really: string, act: () => Promise<void>): HTMLButtonElement {
  const button: HTMLButtonElement = h("button", { class: "secondary", "data-testid": testid, onclick: async () => {
    if (button.dataset.confirm !== "yes") {
      button.dataset.confirm = "yes";
      button.textContent = really;
      return;
    }
    button.disabled = true;
    try {
      await act();
    } finally {
      button.disabled = false;
      button.dataset.confirm = "no";
      button.textContent = label;
    }
  } }, label);
  return button;
}

function actionsSection(client: Client, describe: (e: unknown) => string, reload: () => Promise<void>,
  onDeleted: () => Promise<void>): HTMLElement {
  const error = h("p", { class: "error", role: "alert", "data-testid": "privacy-error" });
  const state = h("p", { class: "hint", "data-testid": "privacy-action-state" });
  const run = (what: () => Promise<void>) => async () => {
    error.textContent = state.textContent = "";
    try {
      await what();
    } catch (e) {
      error.textContent = describe(e);
    }
  };
  // Server history on or off, as this device keeps it (the relay only holds the entries).
  const historyState = h("p", { "data-testid": "privacy-history-setting" });
  const showHistory = async () => {
    const on = await serverHistoryOn(client.store);
    historyState.dataset.on = String(on);
    historyState.textContent = on
      ? "Server history is on: every device of the account stores its messages, encrypted, on the server, so a "
        + "device you link or recover later reads them."
      : "Server history is off: a device you link or recover later starts empty.";
    historyOn.hidden = on;
  };
  const historyOn = h("button", { class: "secondary", "data-testid": "privacy-history-on", hidden: true,
    onclick: run(async () => {
      historyOn.disabled = true;
      try {
        const queued = await turnServerHistoryOn(client);
        state.textContent = `Server history is on for every device; ${queued} messages from this browser are stored.`;
      } finally {
        historyOn.disabled = false;
        await showHistory();
      }
      await reload();
    }) }, "Keep history on the server");
  void showHistory().catch((e) => { error.textContent = describe(e); });
  const history = confirmed("privacy-delete-history", "Delete stored history", "Really delete it on the server?",
    run(async () => {
      await deleteServerHistory(client);
      state.textContent = "The server's copy of your history is deleted, and server history is off on every device.";
      await showHistory();
      await reload();
    }));
  const exported = h("button", { class: "secondary", "data-testid": "privacy-export", onclick: run(async () => {
    const data = await exportServerData(client.api);
    const url = URL.createObjectURL(new Blob([data as Uint8Array<ArrayBuffer>], { type: "application/json" }));
    const link = h("a", { href: url, download: "cipherpost-server-data.json" });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    state.textContent = "Saved as cipherpost-server-data.json.";
  }) }, "Export as a file");
  const username = h("input", { autocomplete: "off", spellcheck: "false", "aria-label": "Your username, to confirm",
    "data-testid": "privacy-delete-username" });
  const deletion = h("form", { class: "link", hidden: true, onsubmit: (event: Event) => {
    event.preventDefault();
    void run(async () => {
      if (username.value.trim().toLowerCase() !== client.username) {
        throw new RangeError("type your username to confirm");
      }
      await deleteAccount(client);
      await onDeleted();
    })();
  } }, h("p", {}, "This deletes your account on the server: every device, queued message, stored history, key "
    + "and setting, and then everything in this browser. Contacts keep what they already received. Type your "
    + "username to confirm."), username,
  h("button", { type: "submit", "data-testid": "privacy-delete-confirm" }, "Delete my account"));
  const startDeletion = h("button", { class: "secondary", "data-testid": "privacy-delete-account", onclick: () => {
    deletion.hidden = false;
    username.focus();
  } }, "Delete account…");
  return h("div", {}, h("h4", {}, "Act on it"), historyState,
    h("div", { class: "buttons" }, historyOn, history, exported, startDeletion), deletion, state, error);
}

/** Sealed messages this browser refused (../app/refusals.ts); nothing shown while there are none. */
async function refusalsSection(client: Client): Promise<HTMLElement | false> {
  const refusals = await sealedRefusals(client);
  if (refusals.length === 0) return false;
  return h("div", { "data-testid": "sealed-refusals" },
    h("h3", {}, "Refused sealed messages"),
    h("ul", { class: "notices" }, ...refusals.slice().reverse().map((r) => h("li", {
      "data-testid": "sealed-rejected", "data-error": r.error },
    `${new Date(r.at).toISOString().slice(0, 16).replace("T", " ")} UTC: ${describeRefusal(r)}`))));
}

/** Receipts and typing indicators: kept by this browser only, as the SDK keeps them per device. */
async function settingsSection(client: Client, describe: (e: unknown) => string): Promise<HTMLElement> {
  const current = await loadSettings(client.store);
  const error = h("p", { class: "error", role: "alert", "data-testid": "settings-error" });
  const toggle = (name: keyof Settings, testid: string, label: string) => {
    const box = h("input", { type: "checkbox", id: testid, "data-testid": testid, checked: current[name],
      onchange: async () => {
        error.textContent = "";
        try {
          await saveSettings(client.store, { ...(await loadSettings(client.store)), [name]: box.checked });
        } catch (e) {
          error.textContent = describe(e);
        }
        box.dataset.saved = String(box.checked);
      } });
    box.dataset.saved = String(current[name]);
    return h("li", {}, box, " ", h("label", { for: testid }, label));
  };
  const timer = await defaultTimerChoice(client, describe, error);
  return h("div", { "data-testid": "settings" },
    h("h3", {}, "This browser's settings"),
    h("p", { class: "hint" }, "Kept in this browser only; the server never learns them. When one is off, this "
      + "browser sends none, and (as in other Signal apps) shows no read receipts or typing of others either."),
    h("ul", { class: "settings" },
      toggle("deliveryReceipts", "setting-delivery-receipts", "Delivery receipts: tell senders their message arrived"),
      toggle("readReceipts", "setting-read-receipts", "Read receipts: tell senders you read their message"),
      toggle("typingIndicators", "setting-typing", "Typing indicators: show contacts when you are typing"),
      timer),
    error);
}

/** The choices of the chat header's timer (main.ts), for the default. */
const DEFAULT_TIMERS: [number, string][] = [[0, "Off"], [10, "10 seconds"], [60, "1 minute"], [3600, "1 hour"],
  [86_400, "1 day"], [604_800, "1 week"], [2_419_200, "4 weeks"]];

/** The disappearing-message default for conversations this browser starts (../app/retention.ts). */
async function defaultTimerChoice(client: Client, describe: (e: unknown) => string,
  error: HTMLElement): Promise<HTMLElement> {
  const current = await defaultExpireTimer(client.store);
  const choices = DEFAULT_TIMERS.some(([s]) => s === current) ? DEFAULT_TIMERS
    : [...DEFAULT_TIMERS, [current, `${current} seconds`] as [number, string]];
  const select = h("select", { id: "setting-default-timer", "data-testid": "setting-default-timer",
    onchange: async () => {
      error.textContent = "";
      try {
        await setDefaultExpireTimer(client.store, Number(select.value));
        select.dataset.saved = select.value;
      } catch (e) {
        error.textContent = describe(e);
      }
    } }, ...choices.map(([seconds, name]) => h("option", { value: String(seconds), selected: seconds === current }, name)));
  select.dataset.saved = String(current);
  return h("li", {}, h("label", { for: "setting-default-timer" }, "Disappearing messages in conversations you start: "),
    select, h("span", { class: "hint" }, " (conversations with messages keep their own timer)"));
}

/** The page on screen, kept across redraws (see securityPage). */
let shown: { client: Client; page: HTMLElement; notices: HTMLElement; refusals: HTMLElement } | undefined;

/**
 * `onDeleted` runs once the account is deleted on the relay and the client stopped.
 *
 * A redraw (a message arriving) while the page is on screen returns the same page with
 * only its notices and refused messages read again: its forms hold steps in progress (a
 * half-typed passphrase or code, a recovery key or recovery codes shown once) that a new
 * page would lose. Opened again after leaving it, the page is built anew.
 */
export async function securityPage(client: Client, describe: (e: unknown) => string,
  back: HTMLElement, onDeleted: () => Promise<void>): Promise<HTMLElement> {
  const current = shown;
  if (current !== undefined && current.client === client && current.page.isConnected) {
    current.notices.replaceChildren(await noticesSection(client));
    current.refusals.replaceChildren(...[await refusalsSection(client)].filter((s): s is HTMLElement => s !== false));
    return current.page;
  }
  const notices = h("div", {}, await noticesSection(client));
  const refusals = h("div", {}, await refusalsSection(client));
  const page = h("section", { class: "chat page", "data-testid": "security" },
    h("h2", {}, "Account security and privacy"),
    notices, refusals, twoFactorSection(client, describe), passkeySection(client, describe),
    recoverySecretsSection(client, describe),
    await settingsSection(client, describe),
    privacySection(client, describe, onDeleted), back);
  shown = { client, page, notices, refusals };
  return page;
}
