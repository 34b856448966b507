"""Fixtures for the tool tests: tenants in the session's real PostgreSQL, in-process
third-party sandboxes on free ports, and tool registries wired to both."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
import asyncpg
import grpc
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit.devstack import Platform
from services.kit.resilience import Resilience
from services.orchestrator.tools import SmtpConfig, ToolRegistry, ToolsConfig, build_registry
from services.sandbox.crm import CrmSandbox
from services.sandbox.mail import MailSandbox
from services.sandbox.payment import PaymentSandbox

PAYMENT_KEY = "sk_test_tools"


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def no_sleep(_: float) -> None:
    """Backoff without waiting: retries happen at once."""


@dataclass
class Sandboxes:
    """The third parties, running in this process."""

    payment: PaymentSandbox
    crm: CrmSandbox
    mail: MailSandbox

    def config(self) -> ToolsConfig:
        """Tool configuration pointing at the sandboxes."""
        return ToolsConfig(
            payment_url=self.payment.url,
            payment_api_key=PAYMENT_KEY,
            crm_url=self.crm.url,
            smtp=SmtpConfig(host="127.0.0.1", port=self.mail.port),
        )


@pytest.fixture(scope="module")
async def sandboxes() -> AsyncIterator[Sandboxes]:
    """Payment, CRM and mail sandboxes for the module."""
    started = Sandboxes(PaymentSandbox(api_key=PAYMENT_KEY), CrmSandbox(), MailSandbox())
    for sandbox in (started.payment, started.crm, started.mail):
        await sandbox.run(port=0)
    try:
        yield started
    finally:
        for sandbox in (started.payment, started.crm, started.mail):
            await sandbox.close()


@pytest.fixture(scope="module")
async def admin_db(platform: Platform) -> AsyncIterator[asyncpg.Connection]:
    """A superuser connection, to set up tenants and look behind row-level security."""
    connection = await asyncpg.connect(platform.admin_database_url)
    try:
        yield connection
    finally:
        await connection.close()


async def create_tenant(admin_db: asyncpg.Connection) -> str:
    """A fresh tenant row, inserted as the superuser."""
    tenant = f"tools-{uuid.uuid4().hex[:10]}"
    await admin_db.execute(
        "INSERT INTO app.tenants (tenant_id, display_name, plan_id) VALUES ($1, $1, 'pro')", tenant
    )
    return tenant


@pytest.fixture
async def tenant(admin_db: asyncpg.Connection) -> str:
    """A fresh tenant."""
    return await create_tenant(admin_db)


@pytest.fixture
async def other_tenant(admin_db: asyncpg.Connection) -> str:
    """A second fresh tenant, to check isolation."""
    return await create_tenant(admin_db)


RegistryFactory = Callable[[Resilience], ToolRegistry]


@pytest.fixture(scope="module")
async def make_registry(
    sandboxes: Sandboxes, engine: AsyncEngine
) -> AsyncIterator[RegistryFactory]:
    """Build registries over the sandboxes (each with its own resilience state)."""
    async with aiohttp.ClientSession() as http:
        # Knowledge is not under test here; its channel connects lazily and is never used.
        channel = grpc.aio.insecure_channel("127.0.0.1:9")

        def make(resilience: Resilience) -> ToolRegistry:
            return build_registry(
                sandboxes.config(),
                resilience=resilience,
                engine=engine,
                http=http,
                knowledge_channel=channel,
            )

        try:
            yield make
        finally:
            await channel.close()


@pytest.fixture
def registry(make_registry: RegistryFactory) -> ToolRegistry:
    """A registry with fresh breakers and metrics, retrying without waiting."""
    return make_registry(Resilience(CollectorRegistry(), sleep=no_sleep))


def key(tool: str, tenant: str, step: str = "step") -> str:
    """A unique idempotency key in the seed's format."""
    return f"{tool}:{tenant}:{uuid.uuid4().hex}.{step}:1760000000"
