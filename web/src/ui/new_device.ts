/**
 * What every way of making this browser a device shares (sign-up, linking, a key file,
 * recovery): the new password for the local store, typed twice; the progress line while
 * the conversations load; and what is left when it fails. A store that holds no usable
 * account is closed and deleted, so that trying again starts clean (the app layer has
 * removed a device the relay took already, ../app/withdraw.ts); one that does, where only
 * opening the inbox failed, is kept.
 */

import type { Client } from "../app/client.js";
import { JoinUndone } from "../app/withdraw.js";
import { IdbKv } from "../app/store/kv.js";
import { h, replace } from "./dom.js";

/** What a start screen that makes this browser a device (import, recovery) gets from the page. */
export interface NewDeviceContext {
  /** The IndexedDB database of the store. */
  dbName: string;
  server: string;
  describe: (error: unknown) => string;
  /** Opens the inbox of the new device. */
  enter: (client: Client) => Promise<void>;
  back: () => void;
}

/** The shortest local store password (DeviceStore and Client say the same). */
export const MIN_PASSWORD = 8;

/** `message` as a sentence: capital first letter, a full stop. */
export function sentence(message: string): string {
  return `${message.charAt(0).toUpperCase()}${message.slice(1)}.`;
}

/**
 * Why a new password (or a key file's passphrase: `noun`) and its repetition cannot be
 * used, or undefined when they can.
 */
export function newPasswordProblem(password: string, again: string, noun = "password"): string | undefined {
  if (password.length < MIN_PASSWORD) return `Choose a ${noun} of at least ${MIN_PASSWORD} characters.`;
  if (password !== again) return `The ${noun}s differ.`;
  return undefined;
}

export interface NewPasswordFields {
  password: HTMLInputElement;
  confirm: HTMLInputElement;
  /** Labels and fields, in form order. */
  elements: HTMLElement[];
  /** See {@link newPasswordProblem}. */
  problem(): string | undefined;
  /** Empty both fields (once the store is made). */
  clear(): void;
}

/**
 * The two password fields of a new store: ids (and, unless given, test ids) and the first
 * field's label.
 */
export function newPasswordFields(ids: [string, string], label: string,
  testids: [string, string] = ids): NewPasswordFields {
  const field = (id: string, testid: string, extra: Record<string, string>) => h("input", { id, type: "password",
    autocomplete: "new-password", required: true, ...extra, "data-testid": testid });
  const password = field(ids[0], testids[0], { minlength: String(MIN_PASSWORD) });
  const confirm = field(ids[1], testids[1], {});
  return {
    password, confirm,
    elements: [h("label", { for: ids[0] }, label), password, h("label", { for: ids[1] }, "Password again"), confirm],
    problem: () => newPasswordProblem(password.value, confirm.value),
    clear: () => {
      password.value = confirm.value = "";
    },
  };
}

export interface ProgressLine {
  /** The archive a linking device sends: events replayed of all. */
  steps(done: number, total: number): void;
  /** The server-stored history: entries read, share of the relay's bytes. */
  history(entries: number, fraction: number): void;
}

/** `caption` and a progress bar (test id `testid`) with its count, in place of `status`'s content. */
export function showProgress(status: HTMLElement, caption: string, testid: string): ProgressLine {
  const progress = h("progress", { max: "1", value: "0", "data-testid": testid });
  const count = h("span", { "data-testid": "link-count" }, "");
  replace(status, h("p", {}, caption), progress, count);
  return {
    steps: (done, total) => {
      progress.max = Math.max(total, 1);
      progress.value = done;
      count.textContent = ` ${done} / ${total}`;
      progress.dataset.done = String(done >= total);
    },
    history: (entries, fraction) => {
      progress.max = 1;
      progress.value = fraction;
      count.textContent = ` ${entries} from the server`;
    },
  };
}

/**
 * After a failed sign-up, link, import or recovery: the text to show. `joined`: the
 * store holds the account and only opening it failed; it is kept and the text says so.
 * Otherwise `kv` is closed (deleting a database waits for its open connections) and the
 * database deleted.
 */
export async function joinFailed(error: unknown, describe: (error: unknown) => string, dbName: string,
  kv: IdbKv | undefined, joined: boolean): Promise<string> {
  const text = error instanceof JoinUndone ? sentence(error.message) : describe(error);
  if (joined) return `${text} This browser is set up: reload the page and unlock it with the new password.`;
  kv?.close();
  await IdbKv.destroy(dbName).catch(() => undefined);
  return text;
}
