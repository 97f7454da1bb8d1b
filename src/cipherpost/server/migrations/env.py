"""Alembic environment: run migrations on the connection the relay hands over."""

from __future__ import annotations

from alembic import context

from cipherpost.server.storage.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through cipherpost.server.storage.engine.migrate")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
