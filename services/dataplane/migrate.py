"""Bring the platform's state up to date: apply migrations, declare JetStream streams."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from services.kit import events
from services.kit.db import async_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def config(url: str) -> Config:
    """The Alembic configuration for the database at ``url``."""
    alembic_config = Config()
    alembic_config.set_main_option("script_location", str(MIGRATIONS))
    alembic_config.set_main_option("sqlalchemy.url", async_url(url).replace("%", "%%"))
    return alembic_config


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` on the database at ``url`` (a privileged role)."""
    command.upgrade(config(url), revision)


async def declare_streams(nats_url: str) -> None:
    """Declare every JetStream stream and consumer."""
    client, js = await events.connect(nats_url)
    try:
        await events.declare(js)
    finally:
        await client.close()
