/**
 * The second factor on the browser's own sensitive actions (docs/server.md, "Account
 * security"). Once an account has one, the relay answers a protected request (a link
 * code, recovery changes, deleting the account, new recovery codes, turning the second
 * factor off) with 403 `second_factor_required`; the request is then asked for a code
 * (six digits from the authenticator, or a recovery code) and sent again with it in the
 * `X-Second-Factor` header. A wrong, replayed or expired code (403
 * `second_factor_invalid`) asks again, saying why; 429 (too many wrong codes) and a
 * cancelled prompt end the action with the relay's refusal. Mirrors the SDK's
 * `account_security.second_factor`, which takes the code up front.
 *
 * The relay checks the second factor before it changes anything, so sending the same
 * request again with a code repeats nothing.
 */

export const SECOND_FACTOR_HEADER = "X-Second-Factor";

/** What the prompt is told: the action, and why the last code was refused (if one was). */
export interface SecondFactorRequest {
  action: string;
  refused: string | undefined;
}

/** Asks the user for a code; undefined when they cancel. */
export type SecondFactorPrompt = (request: SecondFactorRequest) => Promise<string | undefined>;

/** A relay error answer, as ./api.ts's RelayError carries it. */
interface Refusal extends Error {
  status: number;
  code: string;
}

function refusal(error: unknown): Refusal | undefined {
  if (!(error instanceof Error)) return undefined;
  const { status, code } = error as Partial<Refusal>;
  return typeof status === "number" && typeof code === "string" ? error as Refusal : undefined;
}

/** The relay wants a second-factor code for this request. */
export function needsSecondFactor(error: unknown): boolean {
  const r = refusal(error);
  return r !== undefined && r.status === 403 && r.code === "second_factor_required";
}

/** The code sent was wrong, used already (each code and recovery code works once) or expired. */
export function codeRefused(error: unknown): boolean {
  const r = refusal(error);
  return r !== undefined && r.status === 403 && r.code === "second_factor_invalid";
}

export const REFUSED_CODE = "That code is wrong, was used already or has expired. Each code works once: wait "
  + "for the next one from your authenticator, or use a recovery code.";

/**
 * A typed code as the relay takes it: six digits (spaces dropped), or a recovery code
 * (16 letters a-z and digits 2-7, dashes and spaces dropped, any case).
 * @throws RangeError neither.
 */
export function normalizeCode(typed: string): string {
  const digits = typed.replace(/\s/g, "");
  if (/^[0-9]{6}$/.test(digits)) return digits;
  const recovery = typed.toLowerCase().replace(/[\s-]/g, "");
  if (/^[a-z2-7]{16}$/.test(recovery)) return recovery;
  throw new RangeError("a code is the 6 digits your authenticator shows, or one of your recovery codes");
}

/** What a protected request does, in the user's words. */
export function describeAction(method: string, path: string): string {
  const route = path.split("?")[0] ?? path;
  if (route === "/v1/devices/link-codes") return "Linking a new device";
  if (route === "/v1/accounts/me" && method === "DELETE") return "Deleting your account";
  if (route === "/v1/accounts/me/2fa" && method === "DELETE") return "Turning the second factor off";
  if (route === "/v1/accounts/me/2fa/recovery-codes") return "Making new recovery codes";
  if (route === "/v1/accounts/me/identity") return "Resetting your identity key";
  if (/^\/v1\/recovery(\/passphrase)?\/(open|devices)$/.test(route)) return "Recovering your account";
  if (route.startsWith("/v1/recovery")) return "Changing your recovery key or passphrase";
  return "This action";
}

/**
 * `send` once; when the relay wants a second factor and a prompt is set, ask for a code
 * and send again with it until the relay takes one or the user cancels.
 * @throws whatever `send` throws: the first refusal when cancelled or without a prompt,
 *   the last one (429, another error) otherwise.
 */
export async function withSecondFactor<T>(prompt: SecondFactorPrompt | undefined, method: string, path: string,
  send: (headers: Record<string, string>) => Promise<T>): Promise<T> {
  try {
    return await send({});
  } catch (error) {
    if (prompt === undefined || !needsSecondFactor(error)) throw error;
    const action = describeAction(method, path);
    let refused: string | undefined;
    for (;;) {
      const typed = await prompt({ action, refused });
      if (typed === undefined) throw error;
      let code: string;
      try {
        code = normalizeCode(typed);
      } catch (bad) {
        refused = `${(bad as RangeError).message.charAt(0).toUpperCase()}${(bad as RangeError).message.slice(1)}.`;
        continue;
      }
      try {
        return await send({ [SECOND_FACTOR_HEADER]: code });
      } catch (again) {
        if (!codeRefused(again)) throw again;
        refused = REFUSED_CODE;
      }
    }
  }
}
