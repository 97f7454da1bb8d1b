"""``storage/schema.py`` (what the code queries) matches what the migrations create, on
SQLite and PostgreSQL: several changes add migrations at once, and a column or index
added to one and not the other would only show in production."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from cipherpost.server.storage.engine import Database
from cipherpost.server.storage.schema import metadata


def test_schema_module_matches_the_migrations(database_url: str) -> None:
    db = Database(database_url)
    try:
        db.migrate()
        with db.writer.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            differences = compare_metadata(context, metadata)
    finally:
        db.dispose()
    assert differences == []

