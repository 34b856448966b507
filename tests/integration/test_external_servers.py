"""The platform uses the servers named by DATABASE_URL, REDIS_URL, NATS_URL and QDRANT_URL."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import nats
import psutil
import pytest
import redis.asyncio

from services.kit.devstack import Platform
from services.kit.stack import NatsServer, PostgresServer, ValkeyServer, free_port


def _descendants() -> set[int]:
    return {child.pid for child in psutil.Process().children(recursive=True)}


async def test_configured_urls_replace_the_embedded_servers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Servers the platform does not own, as a deployment's would be.
    with (
        PostgresServer(tmp_path / "pg", free_port(), fast=True) as postgres,
        ValkeyServer(tmp_path / "valkey", free_port()) as valkey,
        NatsServer(tmp_path / "nats", free_port(), free_port()) as nats_server,
    ):
        given = {
            "DATABASE_URL": postgres.url,
            "MIGRATION_DATABASE_URL": postgres.url,
            "REDIS_URL": valkey.url,
            "NATS_URL": nats_server.url,
            # Nothing needs to listen here: the platform only hands it to the services.
            "QDRANT_URL": f"http://127.0.0.1:{free_port()}",
        }
        for name, value in given.items():
            monkeypatch.setenv(name, value)
        before = _descendants()

        # As `supportmesh dev` builds it: the infrastructure settings come from the environment.
        platform = Platform(state_dir=tmp_path / "state", fast=True)
        platform.start_infra()
        try:
            assert _descendants() == before, "a server was started anyway"
            assert platform.servers == []
            assert platform.ports == {}
            assert not (tmp_path / "state" / "data").exists()
            assert platform.database_url == platform.admin_database_url == postgres.url
            assert (platform.redis_url, platform.nats_url) == (valkey.url, nats_server.url)

            # Every platform process is pointed at the given servers, and they answer there.
            env = platform.env()
            assert {name: env[name] for name in given} == given
            connection = await asyncpg.connect(env["DATABASE_URL"])
            try:
                assert await connection.fetchval("SELECT current_setting('port')") == str(
                    postgres.port
                )
            finally:
                await connection.close()
            cache = redis.asyncio.Redis.from_url(env["REDIS_URL"])
            try:
                assert await cache.ping()
            finally:
                await cache.aclose()
            client = await nats.connect(env["NATS_URL"])
            try:
                assert client.connected_url is not None
                assert client.connected_url.port == nats_server.port
            finally:
                await client.close()
        finally:
            platform.stop()
        # Stopping the platform leaves servers it does not own alone.
        assert postgres.running
        assert valkey.running
        assert nats_server.running
