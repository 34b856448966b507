"""Fixtures for the orchestrator tests: a tenant with a chat/runs key (REST through the edge,
native gRPC with trusted metadata) and a second orchestrator instance."""

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
from services.orchestrator.workflow import WORKFLOWS_DIR
from tests.integration.edge import provision
from tests.integration.orchestrator.process import Orchestrator
from tests.integration.orchestrator.rpc import Rpc, connect

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


@pytest.fixture
async def rpc(platform: Platform, client: Client) -> AsyncIterator[Rpc]:
    """``client``'s tenant on the session orchestrator over native gRPC."""
    async with connect(f"127.0.0.1:{platform.ports['orchestrator']}", client.tenant) as found:
        yield found


# The second instance's workflows: the shipped ones, with budgets a single model call exceeds.
TIGHT_BUDGETS = {
    "order.yaml": ("  tokens: 10000\n", "  tokens: 10\n"),
    "lead.yaml": ("  cost_usd: 0.10\n", "  cost_usd: 0.000001\n"),
}


@pytest.fixture(scope="module")
async def second(
    platform: Platform, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Orchestrator]:
    """A second orchestrator instance on the same platform, with :data:`TIGHT_BUDGETS`.

    Module-scoped: it must not outlive the tests that use it, or its recovery loop would take
    over other tests' runs (the chaos test's) under its tight budgets.
    """
    directory = tmp_path_factory.mktemp("workflows")
    for source in WORKFLOWS_DIR.glob("*.yaml"):
        text = source.read_text()
        old, new = TIGHT_BUDGETS.get(source.name, ("", ""))
        if old:
            assert old in text, source.name
            text = text.replace(old, new)
        (directory / source.name).write_text(text)
    log = platform.state_dir / "logs" / "orchestrator-second.log"
    started = Orchestrator(platform, log, {"ORCHESTRATOR_WORKFLOWS_DIR": str(directory)})
    await started.start()
    try:
        yield started
    finally:
        started.kill()
