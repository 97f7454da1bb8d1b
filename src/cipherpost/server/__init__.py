"""The Cipherpost relay: accounts, devices, prekey directory, queues, WebSocket delivery.

It stores and relays only ciphertext and public keys. It imports the protocol package
only to parse public keys and verify XEdDSA signatures, never session code.
"""

from .app import create_app
from .settings import Settings

__all__ = ["Settings", "create_app"]
