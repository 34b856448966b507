"""Fixtures for the control plane tests: a stub on the control service's port, callers and
helpers, against the session's real platform (PostgreSQL with row-level security)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg
import grpc
import pytest

from services.kit import context, errors
from services.kit.devstack import Platform
from supportmesh.control.v1 import control_service_pb2 as pb
from supportmesh.control.v1 import control_service_pb2_grpc as pb_grpc
from supportmesh.control.v1 import resources_pb2 as res

TIMEOUT = 10.0
# The async stub type exists only in the generated stubs (.pyi), hence the string alias.
Stub: TypeAlias = "pb_grpc.ControlServiceAsyncStub"
Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Caller:
    """A caller as the edge vouches for it, turned into trusted metadata."""

    tenant: str = ""
    subject: str = ""
    scopes: tuple[str, ...] = ()
    platform_admin: bool = False

    @property
    def md(self) -> Metadata:
        """The trusted metadata the edge would set for this caller."""
        pairs = [
            (context.TENANT_KEY, self.tenant),
            (context.SUBJECT_KEY, self.subject),
            (context.SCOPES_KEY, " ".join(self.scopes)),
            (context.PLATFORM_ADMIN_KEY, "1" if self.platform_admin else ""),
        ]
        return tuple((key, value) for key, value in pairs if value)


OPERATOR = Caller(subject="platform:operator", platform_admin=True)


def admin(tenant: str) -> Caller:
    """A tenant's administrator (scope ``admin``)."""
    return Caller(tenant=tenant, subject=f"tenants/{tenant}/users/admin", scopes=("admin",))


def reader(tenant: str) -> Caller:
    """A tenant credential that may only read the control plane."""
    return Caller(tenant=tenant, subject=f"tenants/{tenant}/apiKeys/ro", scopes=("control:read",))


def chatter(tenant: str) -> Caller:
    """A tenant credential without any control-plane scope."""
    return Caller(tenant=tenant, subject=f"tenants/{tenant}/apiKeys/chat", scopes=("chat:write",))


def unique(prefix: str = "t") -> str:
    """A fresh tenant id (the session's database is shared by every test)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def fails(call: Awaitable[Any]) -> errors.RemoteError:
    """Await a call that must fail; its decoded google.rpc.Status."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return errors.parse_rpc_error(caught.value)


async def create_tenant(
    stub: Stub, tenant_id: str | None = None, plan: str = "plans/pro"
) -> res.Tenant:
    """Create a tenant as the operator."""
    request = pb.CreateTenantRequest(
        tenant=res.Tenant(display_name="Acme Corp", plan=plan),
        tenant_id=tenant_id or unique(),
        request_id=uuid.uuid4().hex,
    )
    reply = await stub.CreateTenant(request, metadata=OPERATOR.md, timeout=TIMEOUT)
    return reply.tenant


@pytest.fixture(scope="session")
async def stub(platform: Platform) -> AsyncIterator[Stub]:
    """A ControlService stub straight to the control service's port."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{platform.ports['control']}") as channel:
        yield pb_grpc.ControlServiceStub(channel)


@pytest.fixture(scope="session")
async def admin_db(platform: Platform) -> AsyncIterator[asyncpg.Connection]:
    """A superuser connection (no row-level security) for checking what was stored."""
    connection = await asyncpg.connect(platform.admin_database_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def tenant(stub: Stub) -> str:
    """A fresh tenant on the pro plan; its id."""
    created = await create_tenant(stub)
    return created.name.removeprefix("tenants/")
