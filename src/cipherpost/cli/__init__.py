"""The ``cipherpost`` command (see :mod:`cipherpost.cli.main`)."""

from .main import cli, main

__all__ = ["cli", "main"]
