/**
 * zxcvbn (zxcvbn-ts with its common and English dictionaries) rating a recovery
 * passphrase. The dictionaries are about 1.6 MB, so this is built into strength.js, not
 * app.js: ./main.ts is that file's entry, ../app/strength.ts loads it (with Subresource
 * Integrity) only when a passphrase is being chosen. Unit tests import it directly.
 */

import { ZxcvbnFactory } from "@zxcvbn-ts/core";
import { adjacencyGraphs, dictionary as common } from "@zxcvbn-ts/language-common";
import { dictionary as english, translations } from "@zxcvbn-ts/language-en";

import { MAX_RATED_CHARS, type Rating } from "../app/passphrase_rating.js";

let zxcvbn: ZxcvbnFactory | undefined;

/** zxcvbn's rating of `passphrase`'s first MAX_RATED_CHARS characters (code points). */
export function ratePassphrase(passphrase: string, userInputs: readonly string[]): Rating {
  // the dictionaries are decompressed and ranked on first use (a few hundred ms), not at load
  zxcvbn ??= new ZxcvbnFactory({ dictionary: { ...common, ...english }, graphs: adjacencyGraphs, translations });
  const result = zxcvbn.check([...passphrase].slice(0, MAX_RATED_CHARS).join(""), [...userInputs]);
  return { score: result.score, guesses: result.guesses, warning: result.feedback.warning ?? "",
    suggestions: [...result.feedback.suggestions] };
}
