"""Alembic's environment for the metadata store.

The platform runs it programmatically (mlplatform.metadata.migrate): the connection
arrives in `config.attributes["connection"]`, already inside a transaction that holds
the cross-process migration lock, and every revision runs inside that transaction.
Run by Alembic's own command line instead, it opens a connection to `-x url=...` (or the
config's sqlalchemy.url). Imported outside Alembic (a tool importing every module), it
does nothing.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import create_engine

from mlplatform.metadata.schema import Base

target_metadata = Base.metadata


def _configure(connection: Any) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite",  # ALTER TABLE on SQLite
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("name the database: alembic -x url=sqlite:///path/to/metadata.db ...")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    with create_engine(url).begin() as conn:
        _configure(conn)


if hasattr(context, "config"):  # only when Alembic runs this file
    run()
