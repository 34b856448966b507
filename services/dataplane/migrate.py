"""Bring the platform's state up to date: apply migrations, declare JetStream streams."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from services.kit import events
from services.kit.db import async_url

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` on the database at ``url`` (a privileged role)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", async_url(url).replace("%", "%%"))
    command.upgrade(config, revision)


async def declare_streams(nats_url: str) -> None:
    """Declare every JetStream stream and consumer."""
    client, js = await events.connect(nats_url)
    try:
        await events.declare(js)
    finally:
        await client.close()
