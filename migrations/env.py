"""Alembic environment: migrations run against the URL securex gives it."""

from alembic import context

import securex.models  # noqa: F401  (registers every table on Base.metadata)
from securex.db import Base, make_engine

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        context.configure(connection=connectable, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=connection.dialect.name == "sqlite",
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:  # a failed migration must not leave its connection open
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("securex migrations run online only")
run_migrations_online()
