#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// Cipherpost interop reference peer built on @signalapp/libsignal-client: 0.90.0 from this
// directory's node_modules, or another pinned version from the directory of a small wrapper
// that calls start(its own directory) (see ../libsignal-peer-0.103/peer.js).
//
// Speaks the JSON-lines peer protocol described in shared/interop/PEER.md: one request object
// per stdin line, exactly one response object per stdout line, in order. Logs go to stderr.
// The peer holds any number of actors; each actor has its own in-memory libsignal stores.
//
// libsignal-client's API is asynchronous, so requests are queued and run strictly one after
// another. Every request runs against a snapshot of the acting actor's stores: if it fails, the
// snapshot is restored, so a failed request never changes state.
//
// Set CIPHERPOST_PEER_DEBUG=1 to log every raw libsignal error to stderr.

'use strict';

const fs = require('node:fs');
const path = require('node:path');
const readline = require('node:readline');
const { pathToFileURL } = require('node:url');

/** The libsignal-client module (ESM, so loaded with a dynamic import in main()). */
let SC;
/**
 * The native bridge of libsignal-client. Only used for the sender-key operations; see
 * SenderKeyBridge below for why.
 */
let Native;

/** From 0.91 on, session functions take the local address (SignalMessage field 6). */
let LOCAL_ADDRESS_API = false;

const DEBUG = Boolean(process.env.CIPHERPOST_PEER_DEBUG);

function log(...args) {
  process.stderr.write(`[libsignal-peer] ${args.join(' ')}\n`);
}

// ------------------------------------------------------------------------------------------------
// Errors

/** An error with a PEER.md error kind attached. */
class PeerError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}

function badRequest(message) {
  return new PeerError('bad_request', message);
}

/**
 * Thrown by our own prekey stores when libsignal asks for an id they do not hold. libsignal turns
 * a store exception into its own error, so classify() also recognises our message text.
 */
class MissingPreKeyError extends PeerError {}

const MISSING_PREKEY = 'cipherpost: no prekey with id';
const MISSING_SIGNED_PREKEY = 'cipherpost: no signed prekey with id';
const MISSING_KYBER_PREKEY = 'cipherpost: no kyber prekey with id';

/**
 * Error-message patterns for libsignal errors that arrive with ErrorCode.Generic. The node bridge
 * only gives dedicated codes to a handful of protocol errors; the rest carry the Rust error's
 * Display text. Order matters: the first match wins.
 */
const MESSAGE_PATTERNS = [
  // Our own store markers, in case libsignal wraps the exception they travelled in.
  [new RegExp(MISSING_KYBER_PREKEY), 'invalid_kyber_prekey_id'],
  [new RegExp(`${MISSING_SIGNED_PREKEY}|${MISSING_PREKEY}`), 'invalid_prekey_id'],
  // Sealed sender (before the generic "invalid ... message" pattern): libsignal reports every
  // certificate check alike, as "trust root validation failed".
  [/trust root validation failed|unknown server certificate id/i, 'invalid_certificate'],
  [/unknown sealed sender message version/i, 'unknown_version'],
  [/untrusted identity/i, 'untrusted_identity'],
  [/message with old counter|duplicate/i, 'duplicated_message'],
  [/invalid kyber pre ?key id/i, 'invalid_kyber_prekey_id'],
  [/invalid (signed )?pre ?key id/i, 'invalid_prekey_id'],
  [/ciphertext version was (too old|unrecognized)|unrecognized (ciphertext|message) version/i,
    'unknown_version'],
  [/signature (validation|verification) failed|invalid signature/i, 'invalid_signature'],
  [/(missing|no) sender key state|invalid sender key session/i, 'no_sender_key'],
  [/session with .* not found|session not found|no session/i, 'no_session'],
  // Fingerprint errors (unparseable scanned code, version mismatch) are problems of the request.
  [/fingerprint/i, 'bad_request'],
  // Checked before the key patterns: "invalid PreKey message: incoming base key is invalid".
  [/invalid .*message|failed to decode|protobuf|too short|decryption failed|too far into the future|\bMAC\b/i,
    'invalid_message'],
  [/bad (kem )?key (type|length)|no key type identifier|invalid key|key agreement|invalid public key/i,
    'invalid_key'],
  [/invalid argument/i, 'bad_request'],
];

/** Maps any thrown value to a PEER.md error kind. */
function classify(err) {
  if (err instanceof PeerError) {
    return err.kind;
  }
  if (SC && err instanceof SC.LibSignalErrorBase) {
    switch (err.code) {
      case SC.ErrorCode.DuplicatedMessage:
        return 'duplicated_message';
      case SC.ErrorCode.UntrustedIdentity:
        return 'untrusted_identity';
      case SC.ErrorCode.InvalidSession:
        return 'no_session';
      case SC.ErrorCode.InvalidSenderKeySession:
        return 'no_sender_key';
      case SC.ErrorCode.VerificationFailed:
        return 'invalid_signature';
      case SC.ErrorCode.SealedSenderSelfSend:
        return 'sealed_sender_self_send';
      case SC.ErrorCode.InvalidProtocolAddress:
      case SC.ErrorCode.InvalidRegistrationId:
        return 'bad_request';
      default:
        break; // Generic and everything else: look at the message text.
    }
    const text = String(err.message);
    for (const [pattern, kind] of MESSAGE_PATTERNS) {
      if (pattern.test(text)) {
        return kind;
      }
    }
    // An unrecognised libsignal failure: almost always a message libsignal would not accept.
    return 'invalid_message';
  }
  // Anything else (TypeError, RangeError from argument conversion, ...) means the request held
  // something libsignal-client could not take.
  const text = String(err && err.message);
  for (const [pattern, kind] of MESSAGE_PATTERNS.slice(0, 2)) {
    if (pattern.test(text)) {
      return kind;
    }
  }
  return 'bad_request';
}

// ------------------------------------------------------------------------------------------------
// Request field validation

const U32_MAX = 0xffffffff;
const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const UUID_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

function field(req, name) {
  if (!Object.prototype.hasOwnProperty.call(req, name) || req[name] === undefined) {
    throw badRequest(`missing field "${name}"`);
  }
  return req[name];
}

function intIn(value, name, min, max) {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw badRequest(`"${name}" must be an integer in ${min}..${max}`);
  }
  return value;
}

function u32(value, name) {
  return intIn(value, name, 0, U32_MAX);
}

function nonEmptyString(value, name) {
  if (typeof value !== 'string' || value.length === 0) {
    throw badRequest(`"${name}" must be a non-empty string`);
  }
  return value;
}

/** Decodes standard padded base64 into a fresh Uint8Array (not a view into Buffer's pool). */
function bytes(value, name) {
  if (typeof value !== 'string' || !BASE64_RE.test(value)) {
    throw badRequest(`"${name}" must be standard padded base64`);
  }
  return new Uint8Array(Buffer.from(value, 'base64'));
}

function b64(data) {
  return Buffer.from(data).toString('base64');
}

/** Validates an address object and returns [name, deviceId]. */
function addressParts(value, name) {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw badRequest(`"${name}" must be an address object {"name", "device_id"}`);
  }
  return [
    nonEmptyString(value.name, `${name}.name`),
    intIn(value.device_id, `${name}.device_id`, 1, 127),
  ];
}

function protocolAddress(value, name) {
  const [n, d] = addressParts(value, name);
  return SC.ProtocolAddress.new(n, d);
}

/** Parses a distribution id: any 128-bit value written 8-4-4-4-12 in hex. */
function distributionIdBytes(value, name) {
  if (typeof value !== 'string' || !UUID_RE.test(value)) {
    throw badRequest(`"${name}" must be a 128-bit id written 8-4-4-4-12 in hex`);
  }
  return new Uint8Array(Buffer.from(value.replace(/-/g, ''), 'hex'));
}

function uuidString(idBytes) {
  const hex = Buffer.from(idBytes).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Stable map key for an address. */
function addrKey(address) {
  return JSON.stringify([address.name(), address.deviceId()]);
}

// ------------------------------------------------------------------------------------------------
// In-memory stores (one set per actor). Records are kept serialized where libsignal mutates them,
// so that nothing libsignal holds can alias our stored state, and so snapshots are cheap copies.

/**
 * Every store keeps its data in one Map; snapshot()/restore() let a request roll back.
 * Stored values are immutable (byte arrays or records never mutated), so a shallow copy suffices.
 */
function withSnapshots(StoreClass) {
  return class extends StoreClass {
    constructor(...args) {
      super(...args);
      this.data = new Map();
    }
    snapshot() {
      return new Map(this.data);
    }
    restore(snap) {
      this.data = snap;
    }
  };
}

function makeStoreClasses() {
  class SessionStore extends withSnapshots(SC.SessionStore) {
    async saveSession(address, record) {
      this.data.set(addrKey(address), record.serialize());
    }
    async getSession(address) {
      const raw = this.data.get(addrKey(address));
      return raw ? SC.SessionRecord.deserialize(raw) : null;
    }
    async getExistingSessions(addresses) {
      return Promise.all(addresses.map(async (address) => {
        const record = await this.getSession(address);
        if (!record) {
          throw new PeerError('no_session', `no session for ${address.toString()}`);
        }
        return record;
      }));
    }
  }

  /** Trust on first use; a different key is untrusted until `trust` replaces the stored one. */
  class IdentityKeyStore extends withSnapshots(SC.IdentityKeyStore) {
    constructor(identityKeyPair, registrationId) {
      super();
      this.identityKeyPair = identityKeyPair;
      this.registrationId = registrationId;
    }
    async getIdentityKey() {
      return this.identityKeyPair.privateKey;
    }
    async getLocalRegistrationId() {
      return this.registrationId;
    }
    async saveIdentity(address, key) {
      // libsignal only saves a key after isTrustedIdentity accepted it; replacing is then the
      // behaviour of libsignal's own in-memory store.
      const key_ = addrKey(address);
      const previous = this.data.get(key_);
      const serialized = key.serialize();
      this.data.set(key_, serialized);
      if (previous && !Buffer.from(previous).equals(Buffer.from(serialized))) {
        return SC.IdentityChange.ReplacedExisting;
      }
      return SC.IdentityChange.NewOrUnchanged;
    }
    async isTrustedIdentity(address, key, _direction) {
      const stored = this.data.get(addrKey(address));
      return !stored || Buffer.from(stored).equals(Buffer.from(key.serialize()));
    }
    async getIdentity(address) {
      const stored = this.data.get(addrKey(address));
      return stored ? SC.PublicKey.deserialize(stored) : null;
    }
    /** The `trust` op: unconditionally replaces the trusted key. */
    replace(address, key) {
      this.data.set(addrKey(address), key.serialize());
    }
  }

  class PreKeyStore extends withSnapshots(SC.PreKeyStore) {
    async savePreKey(id, record) {
      this.data.set(id, record);
    }
    async getPreKey(id) {
      const record = this.data.get(id);
      if (!record) {
        throw new MissingPreKeyError('invalid_prekey_id', `${MISSING_PREKEY} ${id}`);
      }
      return record;
    }
    async removePreKey(id) {
      this.data.delete(id);
    }
  }

  class SignedPreKeyStore extends withSnapshots(SC.SignedPreKeyStore) {
    async saveSignedPreKey(id, record) {
      this.data.set(id, record);
    }
    async getSignedPreKey(id) {
      const record = this.data.get(id);
      if (!record) {
        // PEER.md: an unknown signed prekey id is reported as invalid_prekey_id too.
        throw new MissingPreKeyError('invalid_prekey_id', `${MISSING_SIGNED_PREKEY} ${id}`);
      }
      return record;
    }
  }

  class KyberPreKeyStore extends withSnapshots(SC.KyberPreKeyStore) {
    async saveKyberPreKey(id, record) {
      this.data.set(id, record);
    }
    async getKyberPreKey(id) {
      const record = this.data.get(id);
      if (!record) {
        throw new MissingPreKeyError('invalid_kyber_prekey_id', `${MISSING_KYBER_PREKEY} ${id}`);
      }
      return record;
    }
    async markKyberPreKeyUsed(_id, _signedPreKeyId, _baseKey) {
      // Kyber prekeys are kept (last-resort semantics, as libsignal's in-memory store does), so
      // tests may build several sessions from one bundle's Kyber key.
    }
  }

  class SenderKeyStore extends withSnapshots(SC.SenderKeyStore) {
    static key(sender, distributionId) {
      return JSON.stringify([sender.name(), sender.deviceId(), distributionId.toLowerCase()]);
    }
    async saveSenderKey(sender, distributionId, record) {
      this.data.set(SenderKeyStore.key(sender, distributionId), record.serialize());
    }
    async getSenderKey(sender, distributionId) {
      const raw = this.data.get(SenderKeyStore.key(sender, distributionId));
      return raw ? SC.SenderKeyRecord.deserialize(raw) : null;
    }
  }

  return {
    SessionStore, IdentityKeyStore, PreKeyStore, SignedPreKeyStore, KyberPreKeyStore, SenderKeyStore,
  };
}

/**
 * Adapts a SenderKeyStore to the native bridge's callback interface.
 *
 * libsignal-client's own adapter (and groupEncrypt / SenderKeyDistributionMessage.create) convert
 * distribution ids with the `uuid` package, which only accepts RFC 4122 UUIDs (version nibble 1-8,
 * variant 10xx). PEER.md allows any 128-bit id, and the Rust core accepts any 16 bytes, so the
 * sender-key operations call the native functions with this adapter, which formats ids itself.
 * It is the same adapter shape libsignal-client 0.90.0 uses internally.
 */
function senderKeyBridge(store) {
  return {
    async storeSenderKey(senderHandle, distributionId, recordHandle) {
      await store.saveSenderKey(
        SC.ProtocolAddress._fromNativeHandle(senderHandle),
        uuidString(distributionId),
        SC.SenderKeyRecord._fromNativeHandle(recordHandle),
      );
    },
    async loadSenderKey(senderHandle, distributionId) {
      const record = await store.getSenderKey(
        SC.ProtocolAddress._fromNativeHandle(senderHandle),
        uuidString(distributionId),
      );
      return record ? record._nativeHandle : null;
    },
  };
}

// ------------------------------------------------------------------------------------------------
// Actors

class Actor {
  constructor(stores, name, deviceId, registrationId) {
    this.name = name;
    this.deviceId = deviceId;
    this.address = SC.ProtocolAddress.new(name, deviceId);
    this.registrationId = registrationId;
    this.identity = SC.IdentityKeyPair.generate();
    this.sessions = new stores.SessionStore();
    this.identities = new stores.IdentityKeyStore(this.identity, registrationId);
    this.preKeys = new stores.PreKeyStore();
    this.signedPreKeys = new stores.SignedPreKeyStore();
    this.kyberPreKeys = new stores.KyberPreKeyStore();
    this.senderKeys = new stores.SenderKeyStore();
  }

  allStores() {
    return [this.sessions, this.identities, this.preKeys, this.signedPreKeys, this.kyberPreKeys,
      this.senderKeys];
  }

  snapshot() {
    return this.allStores().map((s) => s.snapshot());
  }

  restore(snap) {
    this.allStores().forEach((s, i) => s.restore(snap[i]));
  }
}

// ------------------------------------------------------------------------------------------------
// Session record inspection

/** Reads a protobuf varint at buf[pos]; returns [value, nextPos]. Values here are small. */
function readVarint(buf, pos) {
  let value = 0;
  let shift = 0;
  for (;;) {
    if (pos >= buf.length || shift > 49) {
      throw new Error('truncated varint');
    }
    const b = buf[pos++];
    value += (b & 0x7f) * 2 ** shift;
    if ((b & 0x80) === 0) {
      return [value, pos];
    }
    shift += 7;
  }
}

/** Returns the first occurrence of protobuf field `num` in `buf` as [wireType, value]. */
function protoField(buf, num) {
  let pos = 0;
  while (pos < buf.length) {
    let tag;
    [tag, pos] = readVarint(buf, pos);
    const wire = tag & 7;
    const fnum = Math.floor(tag / 8);
    let value;
    if (wire === 0) {
      [value, pos] = readVarint(buf, pos);
    } else if (wire === 2) {
      let len;
      [len, pos] = readVarint(buf, pos);
      value = buf.subarray(pos, pos + len);
      pos += len;
    } else if (wire === 1) {
      pos += 8;
    } else if (wire === 5) {
      pos += 4;
    } else {
      throw new Error(`unsupported wire type ${wire}`);
    }
    if (fnum === num) {
      return [wire, value];
    }
  }
  return null;
}

/**
 * The current session's version. libsignal-client 0.90 does not expose it, so it is read from the
 * serialized record (RecordStructure.current_session = 1, SessionStructure.session_version = 1).
 * Falls back to 4, the only version 0.90 can create.
 */
function currentSessionVersion(record) {
  try {
    const current = protoField(record.serialize(), 1);
    if (current && current[0] === 2) {
      const version = protoField(current[1], 1);
      if (version && version[0] === 0) {
        return version[1];
      }
    }
  } catch (err) {
    log('could not read session version:', err.message);
  }
  return 4;
}

// ------------------------------------------------------------------------------------------------
// The peer

class Peer {
  constructor() {
    this.stores = makeStoreClasses();
    this.actors = new Map();
  }

  actorFor(req, fieldName = 'actor') {
    const [name, deviceId] = addressParts(field(req, fieldName), fieldName);
    const actor = this.actors.get(JSON.stringify([name, deviceId]));
    if (!actor) {
      throw badRequest(`unknown actor ${name}.${deviceId}`);
    }
    return actor;
  }

  /** Runs one parsed request; returns the result fields (without id/ok). */
  async handle(req) {
    const op = req.op;
    if (typeof op !== 'string') {
      throw badRequest('missing or non-string "op"');
    }
    if (op === 'create_actor') {
      return this.createActor(req);
    }
    if (Object.prototype.hasOwnProperty.call(ACTORLESS_OPS, op)) {
      return ACTORLESS_OPS[op](req);
    }
    // Own properties only, so "constructor", "__proto__" etc. are unknown ops too.
    const handler = Object.prototype.hasOwnProperty.call(OPS, op) ? OPS[op] : undefined;
    if (typeof handler !== 'function') {
      throw badRequest(`unknown op "${op}"`);
    }
    const actor = this.actorFor(req);
    const snap = actor.snapshot();
    try {
      return await handler.call(this, actor, req);
    } catch (err) {
      actor.restore(snap);
      throw err;
    }
  }

  createActor(req) {
    const [name, deviceId] = addressParts(field(req, 'actor'), 'actor');
    const registrationId = intIn(field(req, 'registration_id'), 'registration_id', 1, 16380);
    const key = JSON.stringify([name, deviceId]);
    if (this.actors.has(key)) {
      throw badRequest(`actor ${name}.${deviceId} already exists`);
    }
    const actor = new Actor(this.stores, name, deviceId, registrationId);
    this.actors.set(key, actor);
    return { identity_key: b64(actor.identity.publicKey.serialize()) };
  }
}

/** The per-op handlers, called with `this` = Peer, the acting Actor, and the request. */
const OPS = {
  async generate_bundle(actor, req) {
    const signedPreKeyId = u32(field(req, 'signed_prekey_id'), 'signed_prekey_id');
    const kyberPreKeyId = u32(field(req, 'kyber_prekey_id'), 'kyber_prekey_id');
    // prekey_id: an integer, or null (or absent) for a bundle without a one-time prekey.
    const preKeyId = req.prekey_id === undefined || req.prekey_id === null
      ? null : u32(req.prekey_id, 'prekey_id');
    const kem = req.kem === undefined ? 'kyber1024' : req.kem;
    if (kem === 'mlkem1024') {
      throw badRequest('libsignal-client 0.90.0 cannot generate ML-KEM-1024 (0x0A) prekeys');
    }
    if (kem !== 'kyber1024') {
      throw badRequest(`unknown kem ${JSON.stringify(kem)}`);
    }

    // Build everything first, then store: nothing is stored if a step fails.
    const now = Date.now();
    const identityPrivate = actor.identity.privateKey;
    const signedPair = SC.PrivateKey.generate();
    const signedPublic = signedPair.getPublicKey();
    const signedSignature = identityPrivate.sign(signedPublic.serialize());
    const signedRecord = SC.SignedPreKeyRecord.new(
      signedPreKeyId, now, signedPublic, signedPair, signedSignature);
    const kyberPair = SC.KEMKeyPair.generate();
    const kyberPublic = kyberPair.getPublicKey();
    const kyberSignature = identityPrivate.sign(kyberPublic.serialize());
    const kyberRecord = SC.KyberPreKeyRecord.new(kyberPreKeyId, now, kyberPair, kyberSignature);
    let preKeyRecord = null;
    if (preKeyId !== null) {
      const preKeyPair = SC.PrivateKey.generate();
      preKeyRecord = SC.PreKeyRecord.new(preKeyId, preKeyPair.getPublicKey(), preKeyPair);
    }

    await actor.signedPreKeys.saveSignedPreKey(signedPreKeyId, signedRecord);
    await actor.kyberPreKeys.saveKyberPreKey(kyberPreKeyId, kyberRecord);
    if (preKeyRecord) {
      await actor.preKeys.savePreKey(preKeyId, preKeyRecord);
    }
    return {
      bundle: {
        registration_id: actor.registrationId,
        device_id: actor.deviceId,
        identity_key: b64(actor.identity.publicKey.serialize()),
        signed_prekey_id: signedPreKeyId,
        signed_prekey: b64(signedPublic.serialize()),
        signed_prekey_signature: b64(signedSignature),
        kyber_prekey_id: kyberPreKeyId,
        kyber_prekey: b64(kyberPublic.serialize()),
        kyber_prekey_signature: b64(kyberSignature),
        prekey_id: preKeyId,
        prekey: preKeyRecord ? b64(preKeyRecord.publicKey().serialize()) : null,
      },
    };
  },

  async process_bundle(actor, req) {
    const remote = protocolAddress(field(req, 'remote'), 'remote');
    const b = field(req, 'bundle');
    if (b === null || typeof b !== 'object' || Array.isArray(b)) {
      throw badRequest('"bundle" must be an object');
    }
    // Validate every field's shape before handing anything to libsignal.
    const registrationId = u32(field(b, 'registration_id'), 'bundle.registration_id');
    const deviceId = intIn(field(b, 'device_id'), 'bundle.device_id', 1, 127);
    const identityKey = bytes(field(b, 'identity_key'), 'bundle.identity_key');
    const signedPreKeyId = u32(field(b, 'signed_prekey_id'), 'bundle.signed_prekey_id');
    const signedPreKey = bytes(field(b, 'signed_prekey'), 'bundle.signed_prekey');
    const signedSig = bytes(field(b, 'signed_prekey_signature'), 'bundle.signed_prekey_signature');
    const kyberPreKeyId = u32(field(b, 'kyber_prekey_id'), 'bundle.kyber_prekey_id');
    const kyberPreKey = bytes(field(b, 'kyber_prekey'), 'bundle.kyber_prekey');
    const kyberSig = bytes(field(b, 'kyber_prekey_signature'), 'bundle.kyber_prekey_signature');
    const hasPreKeyId = b.prekey_id !== undefined && b.prekey_id !== null;
    const hasPreKey = b.prekey !== undefined && b.prekey !== null;
    if (hasPreKeyId !== hasPreKey) {
      throw badRequest('"bundle.prekey_id" and "bundle.prekey" must both be set or both be null');
    }
    const preKeyId = hasPreKeyId ? u32(b.prekey_id, 'bundle.prekey_id') : null;
    const preKey = hasPreKey ? bytes(b.prekey, 'bundle.prekey') : null;

    // Key parsing errors come from libsignal and map to invalid_key.
    const bundle = SC.PreKeyBundle.new(
      registrationId, deviceId,
      preKeyId, preKey === null ? null : SC.PublicKey.deserialize(preKey),
      signedPreKeyId, SC.PublicKey.deserialize(signedPreKey), signedSig,
      SC.PublicKey.deserialize(identityKey),
      kyberPreKeyId, SC.KEMPublicKey.deserialize(kyberPreKey), kyberSig,
    );
    if (LOCAL_ADDRESS_API) {
      await SC.processPreKeyBundle(
        bundle, remote, actor.address, actor.sessions, actor.identities, new Date());
    } else {
      await SC.processPreKeyBundle(bundle, remote, actor.sessions, actor.identities, new Date());
    }
    return {};
  },

  async encrypt(actor, req) {
    const remote = protocolAddress(field(req, 'remote'), 'remote');
    const plaintext = bytes(field(req, 'plaintext'), 'plaintext');
    const message = LOCAL_ADDRESS_API
      ? await SC.signalEncrypt(
        plaintext, remote, actor.address, actor.sessions, actor.identities, new Date())
      : await SC.signalEncrypt(plaintext, remote, actor.sessions, actor.identities, new Date());
    let messageType;
    switch (message.type()) {
      case SC.CiphertextMessageType.PreKey:
        messageType = 'prekey';
        break;
      case SC.CiphertextMessageType.Whisper:
        messageType = 'whisper';
        break;
      default:
        throw new Error(`unexpected ciphertext message type ${message.type()}`);
    }
    return { message_type: messageType, ciphertext: b64(message.serialize()) };
  },

  async decrypt(actor, req) {
    const remote = protocolAddress(field(req, 'remote'), 'remote');
    const messageType = field(req, 'message_type');
    const ciphertext = bytes(field(req, 'ciphertext'), 'ciphertext');
    let plaintext;
    if (messageType === 'prekey') {
      const message = SC.PreKeySignalMessage.deserialize(ciphertext);
      const local = LOCAL_ADDRESS_API ? [actor.address] : [];
      plaintext = await SC.signalDecryptPreKey(
        message, remote, ...local, actor.sessions, actor.identities,
        actor.preKeys, actor.signedPreKeys, actor.kyberPreKeys);
    } else if (messageType === 'whisper') {
      const message = SC.SignalMessage.deserialize(ciphertext);
      const local = LOCAL_ADDRESS_API ? [actor.address] : [];
      plaintext = await SC.signalDecrypt(
        message, remote, ...local, actor.sessions, actor.identities);
    } else {
      throw badRequest('"message_type" must be "prekey" or "whisper"');
    }
    return { plaintext: b64(plaintext) };
  },

  async has_session(actor, req) {
    const remote = protocolAddress(field(req, 'remote'), 'remote');
    const record = await actor.sessions.getSession(remote);
    const usable = record !== null && record.hasCurrentState(new Date());
    return {
      has_session: usable,
      session_version: usable ? currentSessionVersion(record) : null,
    };
  },

  async archive_session(actor, req) {
    const remote = protocolAddress(field(req, 'remote'), 'remote');
    const record = await actor.sessions.getSession(remote);
    if (record !== null) {
      record.archiveCurrentState();
      await actor.sessions.saveSession(remote, record);
    }
    return {};
  },

  async identity(actor, req) {
    const remote = protocolAddress(field(req, 'remote'), 'remote');
    const key = await actor.identities.getIdentity(remote);
    return { identity_key: key === null ? null : b64(key.serialize()) };
  },

  async trust(actor, req) {
    const remote = protocolAddress(field(req, 'remote'), 'remote');
    const key = SC.PublicKey.deserialize(bytes(field(req, 'identity_key'), 'identity_key'));
    actor.identities.replace(remote, key);
    return {};
  },

  async fingerprint(actor, req) {
    const fp = await fingerprintFor(actor, req);
    return {
      displayable: fp.displayableFingerprint().toString(),
      scannable: b64(fp.scannableFingerprint().toBuffer()),
    };
  },

  async compare_scannable(actor, req) {
    const scanned = bytes(field(req, 'scanned'), 'scanned');
    const fp = await fingerprintFor(actor, req);
    // libsignal throws on an unparseable code or a version mismatch (mapped to bad_request).
    const match = fp.scannableFingerprint().compare(SC.ScannableFingerprint._fromBuffer(scanned));
    return { match };
  },

  async sender_key_distribution(actor, req) {
    const distributionId = distributionIdBytes(field(req, 'distribution_id'), 'distribution_id');
    const handle = await Native.SenderKeyDistributionMessage_Create(
      actor.address, distributionId, senderKeyBridge(actor.senderKeys));
    return { skdm: b64(Native.SenderKeyDistributionMessage_Serialize({ _nativeHandle: handle })) };
  },

  async process_sender_key_distribution(actor, req) {
    const sender = protocolAddress(field(req, 'sender'), 'sender');
    const skdm = SC.SenderKeyDistributionMessage.deserialize(bytes(field(req, 'skdm'), 'skdm'));
    await Native.SenderKeyDistributionMessage_Process(
      sender, skdm, senderKeyBridge(actor.senderKeys));
    return {};
  },

  async group_encrypt(actor, req) {
    const distributionId = distributionIdBytes(field(req, 'distribution_id'), 'distribution_id');
    const plaintext = bytes(field(req, 'plaintext'), 'plaintext');
    const handle = await Native.GroupCipher_EncryptMessage(
      actor.address, distributionId, plaintext, senderKeyBridge(actor.senderKeys));
    return { ciphertext: b64(SC.CiphertextMessage._fromNativeHandle(handle).serialize()) };
  },

  async sealed_encrypt(actor, req) {
    const remote = protocolAddress(field(req, 'remote'), 'remote');
    const cert = SC.SenderCertificate.deserialize(
      bytes(field(req, 'sender_certificate'), 'sender_certificate'));
    const plaintext = bytes(field(req, 'plaintext'), 'plaintext');
    const sealed = await SC.sealedSenderEncryptMessage(
      plaintext, remote, cert, actor.sessions, actor.identities);
    return { ciphertext: b64(sealed) };
  },

  async sealed_decrypt(actor, req) {
    const ciphertext = bytes(field(req, 'ciphertext'), 'ciphertext');
    const trustRoot = SC.PublicKey.deserialize(bytes(field(req, 'trust_root'), 'trust_root'));
    const now = intIn(field(req, 'now'), 'now', 0, Number.MAX_SAFE_INTEGER);
    const localE164 = req.local_e164 === undefined || req.local_e164 === null
      ? null : nonEmptyString(req.local_e164, 'local_e164');
    const result = await SC.sealedSenderDecryptMessage(
      ciphertext, trustRoot, now, localE164, actor.name, actor.deviceId,
      actor.sessions, actor.identities, actor.preKeys, actor.signedPreKeys, actor.kyberPreKeys);
    return {
      plaintext: b64(result.message()),
      sender: { name: result.senderUuid(), device_id: result.deviceId() },
      sender_e164: result.senderE164(),
    };
  },

  async group_decrypt(actor, req) {
    const sender = protocolAddress(field(req, 'sender'), 'sender');
    const ciphertext = bytes(field(req, 'ciphertext'), 'ciphertext');
    const plaintext = await Native.GroupCipher_DecryptMessage(
      sender, ciphertext, senderKeyBridge(actor.senderKeys));
    return { plaintext: b64(plaintext) };
  },
};

/** A Curve25519 private key given as 32 bytes of base64. */
function privateKey(req, name) {
  const raw = bytes(field(req, name), name);
  if (raw.length !== 32) {
    throw badRequest(`"${name}" must be 32 bytes`);
  }
  return SC.PrivateKey.deserialize(raw);
}

/**
 * Sealed-sender operations that need no actor: issuing certificates, as a server's key
 * chain would (see ../README.md for the request and result fields).
 */
const ACTORLESS_OPS = {
  server_certificate(req) {
    const trustRoot = privateKey(req, 'trust_root_private');
    const serverKey = privateKey(req, 'server_private');
    const keyId = u32(field(req, 'key_id'), 'key_id');
    const cert = SC.ServerCertificate.new(keyId, serverKey.getPublicKey(), trustRoot);
    return {
      certificate: b64(cert.serialize()),
      trust_root: b64(trustRoot.getPublicKey().serialize()),
      server_key: b64(serverKey.getPublicKey().serialize()),
    };
  },

  sender_certificate(req) {
    const serverCert = SC.ServerCertificate.deserialize(
      bytes(field(req, 'server_certificate'), 'server_certificate'));
    const serverKey = privateKey(req, 'server_private');
    const [uuid, deviceId] = addressParts(field(req, 'sender'), 'sender');
    const e164 = req.sender_e164 === undefined || req.sender_e164 === null
      ? null : nonEmptyString(req.sender_e164, 'sender_e164');
    const identityKey = SC.PublicKey.deserialize(bytes(field(req, 'identity_key'), 'identity_key'));
    const expires = intIn(field(req, 'expires'), 'expires', 0, Number.MAX_SAFE_INTEGER);
    const cert = SC.SenderCertificate.new(
      uuid, e164, deviceId, identityKey, expires, serverCert, serverKey);
    return { certificate: b64(cert.serialize()) };
  },
};

/** Builds the version-2 Fingerprint between the actor and a remote's trusted identity key. */
async function fingerprintFor(actor, req) {
  const remote = protocolAddress(field(req, 'remote'), 'remote');
  const localId = bytes(field(req, 'local_id'), 'local_id');
  const remoteId = bytes(field(req, 'remote_id'), 'remote_id');
  const iterations = req.iterations === undefined
    ? 5200 : intIn(req.iterations, 'iterations', 1, 1000000);
  const remoteKey = await actor.identities.getIdentity(remote);
  if (remoteKey === null) {
    throw badRequest(`no trusted identity for ${remote.toString()}`);
  }
  return SC.Fingerprint.new(
    iterations, 2, localId, actor.identity.publicKey, remoteId, remoteKey);
}

// ------------------------------------------------------------------------------------------------
// JSON-lines loop

function respondError(id, err) {
  const kind = classify(err);
  if (DEBUG || !(err instanceof PeerError)) {
    log(`error -> ${kind}:`, err && err.name, err && err.code, String(err && err.message));
  }
  return { id, ok: false, error: { kind, message: String((err && err.message) || err) } };
}

/**
 * Handles one input line. Returns null for a blank line, else {response, quit}, where quit is
 * true once a `quit` request has been answered.
 */
async function handleLine(peer, line) {
  if (line.trim() === '') {
    return null;
  }
  let req;
  try {
    req = JSON.parse(line);
  } catch (err) {
    return { response: respondError(null, badRequest(`not JSON: ${err.message}`)), quit: false };
  }
  if (req === null || typeof req !== 'object' || Array.isArray(req)) {
    return { response: respondError(null, badRequest('a request must be a JSON object')), quit: false };
  }
  const id = req.id === undefined ? null : req.id;
  if (req.op === 'quit') {
    return { response: { id, ok: true }, quit: true };
  }
  try {
    const result = await peer.handle(req);
    return { response: { id, ok: true, ...result }, quit: false };
  } catch (err) {
    return { response: respondError(id, err), quit: false };
  }
}

function writeLine(obj) {
  return new Promise((resolve) => {
    process.stdout.write(`${JSON.stringify(obj)}\n`, () => resolve());
  });
}

/** Loads libsignal-client from `fromDir`/node_modules; returns its version. */
async function loadLibsignal(fromDir) {
  const pkgDir = path.join(fromDir, 'node_modules', '@signalapp', 'libsignal-client');
  const pkg = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
  SC = await import(pathToFileURL(path.join(pkgDir, 'dist', 'index.js')).href);
  Native = await import(pathToFileURL(path.join(pkgDir, 'dist', 'Native.js')).href);
  const [major, minor] = pkg.version.split('.').map(Number);
  LOCAL_ADDRESS_API = major > 0 || minor >= 91;
  return pkg.version;
}

async function main(fromDir) {
  const version = await loadLibsignal(fromDir);
  if (DEBUG) {
    log(`libsignal-client ${version}`);
  }
  const peer = new Peer();

  const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  let queue = Promise.resolve();
  let quitting = false;

  const finish = () => {
    process.exit(0);
  };

  rl.on('line', (line) => {
    queue = queue.then(async () => {
      if (quitting) {
        return; // Lines after `quit` are not answered.
      }
      let outcome;
      try {
        outcome = await handleLine(peer, line);
      } catch (err) {
        // handleLine catches everything itself; this is a last line of defence.
        outcome = { response: respondError(null, err), quit: false };
      }
      if (outcome === null) {
        return;
      }
      await writeLine(outcome.response);
      if (outcome.quit) {
        quitting = true;
        rl.close();
        finish();
      }
    });
  });
  rl.on('close', () => {
    queue.then(finish);
  });
}

process.on('uncaughtException', (err) => {
  log('uncaught exception:', err && err.stack ? err.stack : String(err));
});
process.on('unhandledRejection', (err) => {
  log('unhandled rejection:', err && err.stack ? err.stack : String(err));
});

/** Runs the peer on the libsignal-client installed under `fromDir`. */
function start(fromDir) {
  main(fromDir).catch((err) => {
    log('failed to start:', err && err.stack ? err.stack : String(err));
    process.exit(1);
  });
}

module.exports = { start };

if (require.main === module) {
  start(__dirname);
}
