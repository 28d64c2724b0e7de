"""Apply the Alembic migrations programmatically (`mailer db upgrade`, and `mailer serve` itself)."""

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from mailer.resources import shipped


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(shipped("migrations")))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> str:
    """Bring the schema to `revision`; return the database's URL as it may be shown (no password)."""
    command.upgrade(alembic_config(database_url), revision)
    return make_url(database_url).render_as_string(hide_password=True)
