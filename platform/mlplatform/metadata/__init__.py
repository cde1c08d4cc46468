"""The platform's own lineage store (MLMD-style tables, Alembic migrations)."""
