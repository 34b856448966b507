"""The test harness: the real platform (PostgreSQL, Valkey, NATS, services, Envoy) once per
session, on free ports, under pytest's temporary directory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import db
from services.kit.devstack import Platform
from services.kit.settings import InfraSettings


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """The whole platform, started once for the session and stopped at its end."""
    stack = Platform(state_dir=Path(tmp_path_factory.mktemp("platform")), fast=True)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def infra_settings(platform: Platform) -> InfraSettings:
    """Infrastructure URLs of the session's platform, as services would read them."""
    return InfraSettings(
        database_url=platform.database_url,
        migration_database_url=platform.admin_database_url,
        redis_url=platform.redis_url,
        nats_url=platform.nats_url,
    )


@pytest.fixture(scope="module")
async def engine(platform: Platform) -> AsyncIterator[AsyncEngine]:
    """The services' engine (the application role: row-level security applies)."""
    built = db.create_engine(platform.database_url, pool_size=2, max_overflow=2)
    try:
        yield built
    finally:
        await built.dispose()
