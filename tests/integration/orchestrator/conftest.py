"""Fixtures for the orchestrator tests: a tenant with a chat/runs key, REST through the edge."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from services.kit.devstack import Platform
from tests.integration.edge import provision

SCOPES = ("chat:write", "runs:read", "runs:write", "knowledge:read", "knowledge:write")


@dataclass
class Client:
    """A tenant's REST client through the Envoy edge."""

    tenant: str
    http: httpx.AsyncClient

    async def chat(self, message: str, **context: Any) -> dict[str, Any]:
        """POST /v1/chat/message; the decoded answer (raises on an HTTP error)."""
        body = {"message": message, "tenant_id": self.tenant, "user_id": "u1", "context": context}
        response = await self.http.post("/v1/chat/message", json=body)
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    async def learn(self, text: str) -> None:
        """Ingest a text document into the tenant's knowledge and wait until it is indexed."""
        response = await self.http.post(
            f"/v1/tenants/{self.tenant}/documents:ingest",
            json={"media_type": "text/plain", "text": text, "title": "Policies",
                  "request_id": uuid.uuid4().hex},
        )  # fmt: skip
        assert response.status_code == 200, response.text
        name = response.json()["document"]["name"]
        for _ in range(600):
            document = (await self.http.get(f"/v1/{name}")).json()["document"]
            if document["status"] in ("DOCUMENT_STATUS_INDEXED", "DOCUMENT_STATUS_FAILED"):
                assert document["status"] == "DOCUMENT_STATUS_INDEXED", document
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"{name} was not indexed")

    async def warm_up(self) -> None:
        """One search, so the knowledge service has its embedding model loaded."""
        response = await self.http.post(
            f"/v1/tenants/{self.tenant}/documents:search", json={"query": "warm up"}
        )
        assert response.status_code == 200, response.text

    async def run(self, run_id: str) -> dict[str, Any]:
        """GET the run."""
        response = await self.http.get(f"/v1/tenants/{self.tenant}/runs/{run_id}")
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()["run"]
        return found


@pytest.fixture
async def client(platform: Platform) -> AsyncIterator[Client]:
    """A fresh tenant and a key with the chat and runs scopes."""
    tenant = await provision.create_tenant(platform)
    key = await provision.create_key(platform, tenant, SCOPES)
    async with httpx.AsyncClient(
        base_url=platform.edge_url, headers={"x-api-key": key.secret}, timeout=30.0
    ) as http:
        yield Client(tenant, http)


@pytest.fixture
async def other(platform: Platform) -> AsyncIterator[Client]:
    """A second tenant's client, to check isolation."""
    tenant = await provision.create_tenant(platform)
    key = await provision.create_key(platform, tenant, SCOPES)
    async with httpx.AsyncClient(
        base_url=platform.edge_url, headers={"x-api-key": key.secret}, timeout=30.0
    ) as http:
        yield Client(tenant, http)


@pytest.fixture
async def admin_db(platform: Platform) -> AsyncIterator[asyncpg.Connection]:
    """A superuser connection, to look behind row-level security."""
    connection = await asyncpg.connect(platform.admin_database_url)
    try:
        yield connection
    finally:
        await connection.close()
