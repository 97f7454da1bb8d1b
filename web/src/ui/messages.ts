/**
 * What the conversation view shows of a message besides its text: the reactions it has
 * (each emoji with its count, who chose it on hover), and its actions: react with one of
 * a few emoji or take one's reaction back, and for one's own message, edit its text or
 * delete it for everyone (Client.react, editMessage, deleteForEveryone). Which message's
 * menu is open, is being edited or awaits the deletion's confirmation is kept here across
 * redraws. Text goes in as text only (./dom.ts).
 */

import type { Client } from "../app/client.js";
import { MAX_EDIT_TEXT } from "../app/message_actions.js";
import type { Contact, StoredMessage } from "../app/model.js";
import { summarize } from "../app/reactions.js";
import { h } from "./dom.js";

/** The reactions offered (any emoji a contact sends is shown). */
export const CHOICES = ["👍", "❤️", "😂", "😮", "😢", "🙏"];

export interface MessageHooks {
  nameOf(contact: Contact | undefined, accountId: string): string;
  /** An action was done: redraw (the chat's error line cleared). */
  changed(): Promise<void>;
  /** An action was refused or could not be sent: say why in the chat's error line and redraw. */
  failed(error: unknown): Promise<void>;
}

/** The message (author:timestamp) whose menu is open, whose text is being edited, whose deletion awaits a second click. */
const state = { open: "", editing: "", confirming: "" };

export interface MessageParts {
  /** The edit form in place of the text while it is edited, else false. */
  edit: HTMLElement | false;
  /** Reactions and actions, under the message. */
  below: HTMLElement;
}

export async function messageParts(client: Client, message: StoredMessage, hooks: MessageHooks): Promise<MessageParts> {
  const id = `${message.author}:${message.timestamp}`;
  const reactions = await client.reactions(message);
  const own = message.author === client.accountId;
  const act = async (action: () => Promise<void>): Promise<void> => {
    state.open = "";
    try {
      await action();
    } catch (error) {
      await hooks.failed(error);
      return;
    }
    if (state.editing === id) state.editing = "";
    await hooks.changed();
  };
  return { edit: own && state.editing === id ? editForm(client, message, act, hooks) : false,
    below: h("div", { class: "below" }, await reactionRow(client, reactions, hooks),
      actionMenu(client, message, id, reactions[client.accountId], act, hooks)) };
}

/** The message's reactions, or false when it has none. */
async function reactionRow(client: Client, reactions: Record<string, string>, hooks: MessageHooks): Promise<HTMLElement | false> {
  const shown = summarize(reactions);
  if (shown.length === 0) return false;
  const name = async (reactor: string): Promise<string> =>
    (reactor === client.accountId ? "you" : hooks.nameOf(await client.contact(reactor), reactor));
  return h("span", { class: "reactions", "data-testid": "reactions" }, ...await Promise.all(shown.map(async ({ emoji, reactors }) =>
    h("span", { class: "reaction", "data-testid": "reaction", "data-emoji": emoji, "data-count": String(reactors.length),
      "data-mine": String(reactors.includes(client.accountId)), title: (await Promise.all(reactors.map(name))).join(", ") },
    `${emoji} ${reactors.length}`))));
}

function actionMenu(client: Client, message: StoredMessage, id: string, mine: string | undefined,
  act: (action: () => Promise<void>) => Promise<void>, hooks: MessageHooks): HTMLElement {
  const { conversation, timestamp } = message;
  const target = { author: message.author, timestamp };
  const own = message.author === client.accountId;
  const confirming = state.confirming === id;
  const remove = h("button", { type: "button", class: "secondary small", "data-testid": "delete-message",
    "data-confirm": confirming ? "yes" : undefined,
    onclick: () => {
      if (state.confirming !== id) {
        state.confirming = id;
        remove.dataset.confirm = "yes";
        remove.textContent = "Really delete for everyone?";
        return;
      }
      state.confirming = "";
      void act(() => client.deleteForEveryone(conversation, timestamp));
    } }, confirming ? "Really delete for everyone?" : "Delete for everyone");
  const menu = h("details", { class: "message-actions", open: state.open === id,
    ontoggle: () => {
      if (menu.open) state.open = id;
      else if (state.open === id) state.open = "";
    } },
  h("summary", { "data-testid": "message-actions", title: "React, edit or delete", "aria-label": "Message actions" }, "⋯"),
  h("span", { class: "choices" },
    ...CHOICES.map((emoji) => h("button", { type: "button", class: "secondary small", "data-testid": "react",
      "data-emoji": emoji, title: `React with ${emoji}`, "aria-pressed": String(mine === emoji),
      onclick: () => void act(() => client.react(conversation, target, emoji)) }, emoji)),
    mine === undefined ? false : h("button", { type: "button", class: "secondary small", "data-testid": "unreact",
      onclick: () => void act(() => client.react(conversation, target, mine, true)) }, "Take back my reaction"),
    own && message.text !== "" ? h("button", { type: "button", class: "secondary small", "data-testid": "edit-message",
      onclick: () => {
        state.editing = id;
        state.open = "";
        void hooks.changed().then(() => (document.querySelector("[data-testid=edit-input]") as HTMLInputElement | null)?.focus());
      } }, "Edit") : false,
    own ? remove : false));
  return menu;
}

function editForm(client: Client, message: StoredMessage, act: (action: () => Promise<void>) => Promise<void>,
  hooks: MessageHooks): HTMLElement {
  const input = h("input", { value: message.text, "aria-label": "New text", "data-testid": "edit-input",
    autocomplete: "off", maxlength: String(MAX_EDIT_TEXT) });
  return h("form", { class: "edit", "data-testid": "edit-form",
    onsubmit: (event: Event) => {
      event.preventDefault();
      void act(() => client.editMessage(message.conversation, message.timestamp, input.value));
    } },
  input, h("button", { type: "submit", class: "small", "data-testid": "edit-save" }, "Save"),
  h("button", { type: "button", class: "secondary small", "data-testid": "edit-cancel",
    onclick: () => { state.editing = ""; void hooks.changed(); } }, "Cancel"));
}
