"""The Cipherpost client SDK: one device of an account, its encrypted local store, and
the application protocol of docs/spec/ on top of the protocol core.

    client = await Client.register(Path("alice.db"), "http://127.0.0.1:8080",
                                   username="alice", passphrase="...", history=True)
    await client.send_text("bob", "hello")
    async for event in client.listen():
        ...
"""

from .api import RelayError, RelayUnavailable
from .client import (
    AccountSuspended,
    Client,
    ClientError,
    ClientOptions,
    DeviceRemoved,
    IdentityNotTrusted,
)
from .store.crypto import WrongKey
from .store.database import StoreError

__all__ = [
    "AccountSuspended",
    "Client",
    "ClientError",
    "ClientOptions",
    "DeviceRemoved",
    "IdentityNotTrusted",
    "RelayError",
    "RelayUnavailable",
    "StoreError",
    "WrongKey",
]
