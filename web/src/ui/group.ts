/**
 * A group's panel in its chat: the members with their roles, and the edits this member
 * may make (docs/spec/groups.md): an admin adds and removes members and makes others
 * admins (so it can leave: a group with members keeps an admin); anyone renames
 * unless the group keeps its attributes to admins; every member can leave. Each edit is
 * a signed group change (../app/client.ts); a refused one shows why and changes nothing.
 */

import type { Client } from "../app/client.js";
import type { Group } from "../app/groups.js";
import type { Contact } from "../app/model.js";
import { h } from "./dom.js";

export interface GroupPanelHooks {
  describe: (error: unknown) => string;
  nameOf: (contact: Contact | undefined, accountId: string) => string;
  changed: () => Promise<void>;
}

/** Panels the user opened, kept open across redraws (the page is drawn anew on each event). */
const openPanels = new Set<string>();

export async function groupPanel(client: Client, conversation: string, group: Group, hooks: GroupPanelHooks): Promise<HTMLElement> {
  const me = client.accountId;
  if (!group.isMember(me)) {
    return h("p", { class: "notice", "data-testid": "group-left" },
      "You are no longer in this group: you cannot send here, and new messages do not reach you.");
  }
  const admin = group.isAdmin(me);
  const error = h("p", { class: "error", role: "alert", "data-testid": "group-error" });
  const act = async (button: HTMLButtonElement, edit: () => Promise<unknown>): Promise<void> => {
    error.textContent = "";
    button.disabled = true;
    try {
      await edit();
      await hooks.changed();
    } catch (e) {
      error.textContent = hooks.describe(e);
      button.disabled = false;
    }
  };
  const members = await Promise.all([...group.members].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(async ([account]) => {
      const name = account === me ? "you" : hooks.nameOf(await client.contact(account), account);
      const remove: HTMLButtonElement = h("button", { class: "secondary small", type: "button", "data-testid": "group-remove",
        "data-account": account, "aria-label": `Remove ${name}`,
        onclick: () => void act(remove, () => client.removeGroupMembers(conversation, [account])) }, "Remove");
      const promote: HTMLButtonElement = h("button", { class: "secondary small", type: "button", "data-testid": "group-admin",
        "data-account": account, onclick: () => void act(promote, () => client.setGroupAdmin(conversation, account, !group.isAdmin(account))) },
      group.isAdmin(account) ? "Not admin" : "Make admin");
      return h("li", { "data-testid": "group-member", "data-account": account, "data-admin": String(group.isAdmin(account)) },
        name, h("span", { class: "meta" }, group.isAdmin(account) ? " admin" : ""),
        admin && account !== me ? promote : false, admin && account !== me ? remove : false);
    }));
  const addInput = h("input", { placeholder: "usernames, comma-separated", "aria-label": "Members to add",
    "data-testid": "group-add-input", autocomplete: "off" });
  const addButton = h("button", { type: "submit", "data-testid": "group-add" }, "Add");
  const add = h("form", { class: "group-edit", onsubmit: (event: Event) => {
    event.preventDefault();
    void act(addButton, () => client.addGroupMembers(conversation, addInput.value.split(/[\s,]+/).filter(Boolean)));
  } }, addInput, addButton);
  const titleInput = h("input", { "aria-label": "Group name", "data-testid": "group-title-input", autocomplete: "off",
    maxlength: "100", value: group.title });
  const renameButton = h("button", { type: "submit", "data-testid": "group-rename" }, "Rename");
  const rename = h("form", { class: "group-edit", onsubmit: (event: Event) => {
    event.preventDefault();
    void act(renameButton, () => client.renameGroup(conversation, titleInput.value));
  } }, titleInput, renameButton);
  // Leaving asks once more, in the page (no window.confirm: a dialog the page cannot style).
  const sure: HTMLButtonElement = h("button", { class: "secondary", type: "button", "data-testid": "group-leave-confirm", hidden: true,
    onclick: () => void act(sure, () => client.leaveGroup(conversation)) }, "Yes, leave: no more messages from this group");
  const leave = h("button", { class: "secondary", type: "button", "data-testid": "group-leave",
    onclick: () => { sure.hidden = false; } }, "Leave group");
  return h("details", { class: "group-panel", "data-testid": "group-panel", "data-revision": String(group.revision),
    open: openPanels.has(conversation),
    ontoggle: (event: Event) => {
      if ((event.target as HTMLDetailsElement).open) openPanels.add(conversation);
      else openPanels.delete(conversation);
    } },
    h("summary", { "data-testid": "group-members" }, `${group.members.size} members`),
    h("ul", { class: "group-members" }, ...members),
    admin ? add : false,
    admin || !group.attributesByAdminsOnly ? rename : false,
    h("p", {}, leave, " ", sure), error);
}
