"""Relay storage: SQLAlchemy Core tables, alembic migrations, and the storage interface."""
