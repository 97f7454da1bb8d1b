"""Request and response bodies (they make the OpenAPI document at /docs).

Binary values are standard base64 strings.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MAX_KEYS = 200


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SignedKeyIn(Strict):
    key_id: int = Field(ge=0, le=0xFFFFFFFF)
    public_key: str = Field(max_length=4096, description="base64 serialized public key")
    signature: str = Field(max_length=128, description="base64 XEdDSA signature (64 bytes)")


class OneTimeKeyIn(Strict):
    key_id: int = Field(ge=0, le=0xFFFFFFFF)
    public_key: str = Field(max_length=64, description="base64 serialized Curve25519 key")


class KeysIn(Strict):
    """Keys to upload; absent parts stay as they are."""

    signed_prekey: SignedKeyIn | None = None
    last_resort_kyber_prekey: SignedKeyIn | None = None
    one_time_prekeys: list[OneTimeKeyIn] = Field(default_factory=list, max_length=MAX_KEYS)
    kyber_prekeys: list[SignedKeyIn] = Field(default_factory=list, max_length=MAX_KEYS)
    replace_one_time: bool = Field(
        default=False, description="drop this device's remaining one-time keys (EC and "
        "Kyber) before adding the uploaded ones (a device repairing its directory entry)")


class DeviceKeysIn(KeysIn):
    """A new device: its registration id, name and complete key set."""

    registration_id: int = Field(ge=1, le=16380)
    identity_key: str = Field(max_length=64)
    name: str | None = Field(default=None, max_length=64)
    signed_prekey: SignedKeyIn
    last_resort_kyber_prekey: SignedKeyIn


class RegistrationIdIn(Strict):
    device_id: int = Field(ge=1, le=127)
    registration_id: int = Field(ge=1, le=16380)


class IdentityResetIn(KeysIn):
    """A new identity key for the account, with the calling device's complete key set
    under it and a new registration id for every device of the account."""

    identity_key: str = Field(max_length=64)
    registration_ids: list[RegistrationIdIn] = Field(min_length=1, max_length=127)
    signed_prekey: SignedKeyIn
    last_resort_kyber_prekey: SignedKeyIn


class RegisterIn(DeviceKeysIn):
    username: str | None = Field(default=None, min_length=3, max_length=32,
                                 pattern=r"^[a-z0-9_][a-z0-9_.]*$")
    invite: str | None = Field(default=None, min_length=8, max_length=128,
                               description="an invite code, when the relay's registration "
                                           "is by invitation")


class LinkDeviceIn(DeviceKeysIn):
    link_code: str = Field(min_length=8, max_length=128)


class CredentialsOut(BaseModel):
    account_id: str
    device_id: int
    token: str = Field(description="send as `Authorization: Bearer <token>`; shown once")


class UsernameIn(Strict):
    username: str | None = Field(min_length=3, max_length=32, pattern=r"^[a-z0-9_][a-z0-9_.]*$")


class DeviceOut(BaseModel):
    device_id: int
    registration_id: int
    name: str | None
    created_at: int
    last_seen: int


class AccountOut(BaseModel):
    account_id: str
    username: str | None
    identity_key: str
    devices: list[DeviceOut]


class AccountIdOut(BaseModel):
    account_id: str


class LinkCodeOut(BaseModel):
    link_code: str
    expires_at: int


class KeyCountsOut(BaseModel):
    one_time_prekeys: int
    kyber_prekeys: int


class SignedKeyOut(BaseModel):
    key_id: int
    public_key: str
    signature: str


class OneTimeKeyOut(BaseModel):
    key_id: int
    public_key: str


class BundleOut(BaseModel):
    device_id: int
    registration_id: int
    signed_prekey: SignedKeyOut
    kyber_prekey: SignedKeyOut
    one_time_prekey: OneTimeKeyOut | None


class BundlesOut(BaseModel):
    account_id: str
    identity_key: str
    devices: list[BundleOut]


class OutgoingIn(Strict):
    device_id: int = Field(ge=1, le=127)
    registration_id: int = Field(ge=0, le=16380)
    type: int = Field(ge=1, le=255)
    content: str


class SendIn(Strict):
    timestamp: int = Field(ge=0, le=2**63 - 1, description="sender's clock, ms")
    messages: list[OutgoingIn] = Field(min_length=1, max_length=127)


class SendOut(BaseModel):
    queued: int


class EnvelopeOut(BaseModel):
    id: str
    sender_account_id: str | None
    sender_device_id: int | None
    type: int
    content: str
    client_timestamp: int
    server_timestamp: int


class MessagesOut(BaseModel):
    messages: list[EnvelopeOut]
    more: bool


class AckIn(Strict):
    ids: list[str] = Field(max_length=1000)


class AckOut(BaseModel):
    deleted: int


class AttachmentOut(BaseModel):
    id: str
    expires_at: int
