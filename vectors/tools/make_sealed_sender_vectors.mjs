// SPDX-License-Identifier: Apache-2.0
//
// Regenerates vectors/sealed-sender.json with @signalapp/libsignal-client 0.90.0 (the
// reference peer's install): certificates and one sealed message made by libsignal from
// fixed private keys, so the Python tests check parsing, validation and opening offline.
// The signatures and the sealed message are randomized by libsignal, so a regenerated
// file differs; the tests check behaviour, and the certificate bodies, which are
// deterministic, byte for byte.
//
// Run from the repository root: node vectors/tools/make_sealed_sender_vectors.mjs

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const pkg = path.join(root, 'interop/libsignal-peer/node_modules/@signalapp/libsignal-client');
const SC = await import(pathToFileURL(path.join(pkg, 'dist/index.js')).href);
const version = JSON.parse(fs.readFileSync(path.join(pkg, 'package.json'), 'utf8')).version;

const hex = (b) => Buffer.from(b).toString('hex');
const key = (fill) => SC.PrivateKey.deserialize(new Uint8Array(32).fill(fill));

const trustRoot = key(1);
const serverKey = key(2);
const sender = key(3);
const recipient = key(4);
const senderUuid = '9d0652a3-dcc3-4d11-975f-74d61598733f';
const expires = 1700000000000;

const serverCert = SC.ServerCertificate.new(7, serverKey.getPublicKey(), trustRoot);
const senderCert = SC.SenderCertificate.new(
  senderUuid, '+15551234', 5, sender.getPublicKey(), expires, serverCert, serverKey);

// A plaintext content (a decryption-error message) is the one inner type that needs no session.
const dem = SC.DecryptionErrorMessage.forOriginal(
  new Uint8Array(Buffer.from('an original sender-key message')), SC.CiphertextMessageType.SenderKey,
  1700000000123, 2);
const inner = SC.CiphertextMessage.from(SC.PlaintextContent.from(dem));
const groupId = new Uint8Array(Buffer.from('a group id'));
const usmc = SC.UnidentifiedSenderMessageContent.new(inner, senderCert, 1, groupId);

class Identities extends SC.IdentityKeyStore {
  async getIdentityKey() { return sender; }
  async getLocalRegistrationId() { return 1; }
  async saveIdentity() { return SC.IdentityChange.NewOrUnchanged; }
  async isTrustedIdentity() { return true; }
  async getIdentity() { return recipient.getPublicKey(); }
}
const sealed = await SC.sealedSenderEncrypt(
  usmc, SC.ProtocolAddress.new('recipient', 1), new Identities());

const out = {
  source: `@signalapp/libsignal-client ${version} (vectors/tools/make_sealed_sender_vectors.mjs)`,
  private_keys: 'each private key is 32 bytes of one repeated value (fill)',
  trust_root_fill: 1,
  server_key_fill: 2,
  sender_identity_fill: 3,
  recipient_identity_fill: 4,
  trust_root_public: hex(trustRoot.getPublicKey().serialize()),
  server_certificate: hex(serverCert.serialize()),
  server_certificate_id: 7,
  sender_certificate: hex(senderCert.serialize()),
  sender_certificate_body: hex(senderCert.certificate()),
  sender_uuid: senderUuid,
  sender_e164: '+15551234',
  sender_device_id: 5,
  expires,
  usmc: hex(usmc.serialize()),
  usmc_type: SC.CiphertextMessageType.Plaintext,
  usmc_content_hint: 1,
  usmc_group_id: hex(groupId),
  usmc_contents: hex(inner.serialize()),
  sealed: hex(sealed),
};
fs.writeFileSync(path.join(root, 'vectors/sealed-sender.json'), `${JSON.stringify(out, null, 2)}\n`);
