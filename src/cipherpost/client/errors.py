"""The SDK's errors: each says in a sentence what happened."""

from __future__ import annotations


class ClientError(Exception):
    """A failure explained in a sentence the app can show."""


class IdentityNotTrusted(ClientError):
    """Sending is blocked: the contact's identity key changed and was not accepted yet."""

    def __init__(self, account: str) -> None:
        super().__init__(f"the safety number with {account} changed; compare it and trust "
                         "the new key before sending")
        self.account = account


class DeviceRemoved(ClientError):
    """This device was removed from its account; its credentials no longer work."""


class AccountSuspended(ClientError):
    """The relay's operators suspended this account: the relay refuses its devices
    (HTTP 403 ``account_suspended``, WebSocket close code 4403) until they lift it."""
