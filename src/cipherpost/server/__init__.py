"""The Cipherpost relay: accounts, devices, prekey directory, queues, WebSocket delivery.

It stores and relays only ciphertext and public keys. It imports the protocol package
only to parse public keys and verify XEdDSA signatures, never session code.
"""

from . import native

native.install()  # before the first import of a module it may load compiled

from .app import create_app  # noqa: E402
from .settings import Settings  # noqa: E402

__all__ = ["Settings", "create_app"]
