"""Alembic environment. Migrations run from fusion.store on a connection it passes in
(config.attributes["connection"]), inside the transaction it already holds."""
from alembic import context

from fusion.store.schema import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # `alembic revision --autogenerate` from a shell: -x url=sqlite:///...
    from sqlalchemy import create_engine

    connection = create_engine(context.get_x_argument(as_dictionary=True)["url"]).connect()

def _ours(obj, name, type_, reflected, compare_to) -> bool:
    """The full-text index (migration 0002) is raw SQL, not in the metadata: autogenerate keeps off it."""
    return not (type_ == "table" and name.startswith("items_search"))


# render_as_batch: SQLite can't ALTER most things; batch mode copies the table instead.
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                  include_object=_ours)
with context.begin_transaction():
    context.run_migrations()
