/**
 * What the conversation view shows under a message besides its text: the reactions it
 * has (each emoji with its count, who chose it on hover). Text goes in as text only
 * (./dom.ts).
 */

import type { Client } from "../app/client.js";
import type { Contact, StoredMessage } from "../app/model.js";
import { summarize } from "../app/reactions.js";
import { h } from "./dom.js";

/** The message's reactions, or false when it has none. */
export async function reactionRow(client: Client, message: StoredMessage,
  nameOf: (contact: Contact | undefined, accountId: string) => string): Promise<HTMLElement | false> {
  const shown = summarize(await client.reactions(message));
  if (shown.length === 0) return false;
  const name = async (reactor: string): Promise<string> =>
    (reactor === client.accountId ? "you" : nameOf(await client.contact(reactor), reactor));
  return h("span", { class: "reactions", "data-testid": "reactions" }, ...await Promise.all(shown.map(async ({ emoji, reactors }) =>
    h("span", { class: "reaction", "data-testid": "reaction", "data-emoji": emoji, "data-count": String(reactors.length),
      "data-mine": String(reactors.includes(client.accountId)), title: (await Promise.all(reactors.map(name))).join(", ") },
    `${emoji} ${reactors.length}`))));
}
