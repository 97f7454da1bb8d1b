/**
 * The driver's `webauthn` command: Chromium's virtual authenticators through the DevTools
 * protocol (WebAuthn domain), for the passkey test (tests/web/test_passkey_browser.py).
 * One CDP session per page, made on first use; the authenticators live as long as the
 * page, across reloads.
 *
 * Actions: add (a CTAP2 platform authenticator with resident keys, user verification and
 * PRF, the user verified; answers {authenticator}), remove {authenticator}, credentials
 * {authenticator} (each credential's id, rpId and sign count), remove_credential
 * {authenticator, credential}.
 */

import type { BrowserContext, CDPSession, Page } from "playwright-core";

const sessions = new WeakMap<Page, CDPSession>();

async function session(context: BrowserContext, page: Page): Promise<CDPSession> {
  let found = sessions.get(page);
  if (found === undefined) {
    found = await context.newCDPSession(page);
    await found.send("WebAuthn.enable", { enableUI: false });
    sessions.set(page, found);
  }
  return found;
}

export async function webauthn(context: BrowserContext, page: Page, c: Record<string, unknown>)
  : Promise<Record<string, unknown>> {
  const cdp = await session(context, page);
  const authenticatorId = String(c.authenticator ?? "");
  switch (c.action) {
    case "add": {
      const added = await cdp.send("WebAuthn.addVirtualAuthenticator", { options: {
        protocol: "ctap2", ctap2Version: "ctap2_1", transport: "internal", hasResidentKey: true,
        hasUserVerification: true, isUserVerified: true, hasPrf: c.prf !== false, automaticPresenceSimulation: true,
      } });
      return { authenticator: added.authenticatorId };
    }
    case "remove":
      await cdp.send("WebAuthn.removeVirtualAuthenticator", { authenticatorId });
      return {};
    case "credentials": {
      const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
      return { credentials: credentials.map((x) => ({ id: x.credentialId, rp_id: x.rpId ?? null,
        resident: x.isResidentCredential, sign_count: x.signCount })) };
    }
    case "remove_credential":
      await cdp.send("WebAuthn.removeCredential", { authenticatorId, credentialId: String(c.credential) });
      return {};
    default:
      throw new Error(`unknown webauthn action ${String(c.action)}`);
  }
}
