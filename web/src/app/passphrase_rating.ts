/**
 * The passphrase strength rule, and the shape of zxcvbn's answer that the separately
 * loaded strength.js (../strength/) gives app.js. Nothing here may import zxcvbn or its
 * dictionaries: this module is part of app.js; ./strength.ts loads the rating function.
 *
 * The rule is the SDK's (cipherpost.client.recovery.check_passphrase): zxcvbn's score
 * (0-4) must reach MIN_SCORE, 3 being "safely unguessable: moderate protection from an
 * offline slow-hash scenario" (about 10^10 guesses), with the username and "cipherpost"
 * as words an attacker tries first, over the passphrase's first MAX_RATED_CHARS
 * characters (zxcvbn's time grows with the length; a longer passphrase is no weaker).
 */

export const MIN_SCORE = 3;
export const MAX_RATED_CHARS = 100;
/** The words zxcvbn treats as known to an attacker, besides the caller's (the username). */
export const SITE_INPUTS: readonly string[] = ["cipherpost"];
/** The name under which strength.js leaves its rating function (see ../strength/main.ts). */
export const RATER_GLOBAL = "cipherpostRatePassphrase";

/** zxcvbn's verdict on one passphrase, with its advice (English). */
export interface Rating {
  score: number;
  guesses: number;
  warning: string;
  suggestions: string[];
}

export type Rate = (passphrase: string, userInputs: readonly string[]) => Rating;

/** A passphrase zxcvbn rates below MIN_SCORE; `rating` holds its advice. */
export class WeakPassphrase extends Error {
  override readonly name = "WeakPassphrase";
  constructor(message: string, readonly rating: Rating) {
    super(message);
  }
}

/**
 * The SDK's check_passphrase: a passphrase `rate` (zxcvbn, from strength.js) scores
 * below MIN_SCORE is refused, with "cipherpost" and `userInputs` (the username) as
 * words an attacker tries first. The message is the SDK's, with zxcvbn's warning and
 * suggestions after it.
 * @throws WeakPassphrase
 */
export function checkPassphrase(passphrase: string, userInputs: readonly string[], rate: Rate,
  what = "recovery passphrase"): void {
  const rating = rate(passphrase, [...SITE_INPUTS, ...userInputs].filter((word) => word !== ""));
  if (rating.score >= MIN_SCORE) return;
  const advice = [rating.warning, ...rating.suggestions].filter((text) => text !== "").join(" ");
  throw new WeakPassphrase(`that ${what} is too easy to guess${advice === "" ? "" : `: ${advice}`}`, rating);
}
