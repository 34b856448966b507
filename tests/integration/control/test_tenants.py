"""Tenants and plans: lifecycle, idempotency, optimistic concurrency, isolation, paging."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import grpc
from google.protobuf import field_mask_pb2, struct_pb2

from supportmesh.control.v1 import control_service_pb2 as pb
from supportmesh.control.v1 import resources_pb2 as res
from tests.integration.control.conftest import (
    OPERATOR,
    TIMEOUT,
    Caller,
    Stub,
    admin,
    chatter,
    create_tenant,
    fails,
    reader,
    unique,
)


async def test_tenant_lifecycle_create_get_update(stub: Stub) -> None:
    tenant_id = unique("acme")
    config = struct_pb2.Struct()
    config.update({"locale": "en-GB", "brand_voice": "friendly"})
    request = pb.CreateTenantRequest(
        tenant=res.Tenant(
            display_name="Acme", plan="plans/free", data_region="eu-west-1", config=config
        ),
        tenant_id=tenant_id,
        request_id=uuid.uuid4().hex,
    )
    created = (await stub.CreateTenant(request, metadata=OPERATOR.md, timeout=TIMEOUT)).tenant
    assert created.name == f"tenants/{tenant_id}"
    assert created.state == res.TENANT_STATE_ACTIVE
    assert created.plan == "plans/free"
    assert created.data_region == "eu-west-1"
    assert dict(created.config) == {"locale": "en-GB", "brand_voice": "friendly"}
    assert created.etag
    assert created.create_time.seconds > 0

    got = await stub.GetTenant(
        pb.GetTenantRequest(name=created.name), metadata=reader(tenant_id).md, timeout=TIMEOUT
    )
    assert got.tenant == created

    renamed = await stub.UpdateTenant(
        pb.UpdateTenantRequest(
            tenant=res.Tenant(name=created.name, display_name="Acme Ltd", etag=created.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        ),
        metadata=admin(tenant_id).md,
        timeout=TIMEOUT,
    )
    assert renamed.tenant.display_name == "Acme Ltd"
    assert renamed.tenant.plan == "plans/free"
    assert renamed.tenant.etag != created.etag

    upgraded = await stub.UpdateTenant(
        pb.UpdateTenantRequest(
            tenant=res.Tenant(
                name=created.name, plan="plans/enterprise", state=res.TENANT_STATE_SUSPENDED
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["plan", "state"]),
        ),
        metadata=OPERATOR.md,
        timeout=TIMEOUT,
    )
    assert upgraded.tenant.plan == "plans/enterprise"
    assert upgraded.tenant.state == res.TENANT_STATE_SUSPENDED
    assert upgraded.tenant.display_name == "Acme Ltd"
    assert dict(upgraded.tenant.config) == {"locale": "en-GB", "brand_voice": "friendly"}


async def test_create_tenant_is_idempotent_on_request_id(stub: Stub) -> None:
    request = pb.CreateTenantRequest(
        tenant=res.Tenant(display_name="Retry Co", plan="plans/pro"),
        tenant_id=unique("retry"),
        request_id=uuid.uuid4().hex,
    )
    first = await stub.CreateTenant(request, metadata=OPERATOR.md, timeout=TIMEOUT)
    second = await stub.CreateTenant(request, metadata=OPERATOR.md, timeout=TIMEOUT)
    assert first.tenant == second.tenant

    again = pb.CreateTenantRequest()
    again.CopyFrom(request)
    again.request_id = uuid.uuid4().hex
    error = await fails(stub.CreateTenant(again, metadata=OPERATOR.md, timeout=TIMEOUT))
    assert error.code == grpc.StatusCode.ALREADY_EXISTS
    assert error.reason == "RESOURCE_EXISTS"
    assert error.metadata["field"] == "tenant_id"


async def test_create_tenant_validates_its_input(stub: Stub) -> None:
    def request(tenant_id: str, plan: str = "plans/pro", name: str = "X") -> pb.CreateTenantRequest:
        return pb.CreateTenantRequest(
            tenant=res.Tenant(display_name=name, plan=plan),
            tenant_id=tenant_id,
            request_id=uuid.uuid4().hex,
        )

    for bad_id in ("Acme", "ab", "1acme", "acme_corp", "a" * 64):
        error = await fails(
            stub.CreateTenant(request(bad_id), metadata=OPERATOR.md, timeout=TIMEOUT)
        )
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT, bad_id
        assert error.reason == "VALIDATION_FAILED"
        assert error.metadata["field"] == "tenant_id"

    error = await fails(
        stub.CreateTenant(request(unique(), name=""), metadata=OPERATOR.md, timeout=TIMEOUT)
    )
    assert error.metadata["field"] == "tenant.display_name"

    error = await fails(
        stub.CreateTenant(
            request(unique(), plan="plans/platinum"), metadata=OPERATOR.md, timeout=TIMEOUT
        )
    )
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "INVALID_STATE"
    assert error.metadata["field"] == "tenant.plan"

    no_request_id = request(unique())
    no_request_id.request_id = ""
    error = await fails(stub.CreateTenant(no_request_id, metadata=OPERATOR.md, timeout=TIMEOUT))
    assert error.metadata["field"] == "request_id"


async def test_only_the_operator_creates_tenants(stub: Stub, tenant: str) -> None:
    request = pb.CreateTenantRequest(
        tenant=res.Tenant(display_name="Sneaky", plan="plans/pro"),
        tenant_id=unique("sneaky"),
        request_id=uuid.uuid4().hex,
    )
    error = await fails(stub.CreateTenant(request, metadata=admin(tenant).md, timeout=TIMEOUT))
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert error.reason == "SCOPE_MISSING"

    error = await fails(stub.CreateTenant(request, timeout=TIMEOUT))
    assert error.code == grpc.StatusCode.UNAUTHENTICATED
    assert error.reason == "TENANT_CONTEXT_MISSING"


async def test_stale_etag_is_aborted(stub: Stub, tenant: str) -> None:
    name = f"tenants/{tenant}"
    current = (
        await stub.GetTenant(
            pb.GetTenantRequest(name=name), metadata=admin(tenant).md, timeout=TIMEOUT
        )
    ).tenant
    mask = field_mask_pb2.FieldMask(paths=["display_name"])
    await stub.UpdateTenant(
        pb.UpdateTenantRequest(
            tenant=res.Tenant(name=name, display_name="First", etag=current.etag), update_mask=mask
        ),
        metadata=admin(tenant).md,
        timeout=TIMEOUT,
    )
    error = await fails(
        stub.UpdateTenant(
            pb.UpdateTenantRequest(
                tenant=res.Tenant(name=name, display_name="Second", etag=current.etag),
                update_mask=mask,
            ),
            metadata=admin(tenant).md,
            timeout=TIMEOUT,
        )
    )
    assert error.code == grpc.StatusCode.ABORTED
    assert error.reason == "CONFLICT"


async def test_update_retry_with_request_id_is_applied_once(stub: Stub, tenant: str) -> None:
    name = f"tenants/{tenant}"
    current = (
        await stub.GetTenant(
            pb.GetTenantRequest(name=name), metadata=admin(tenant).md, timeout=TIMEOUT
        )
    ).tenant
    request = pb.UpdateTenantRequest(
        tenant=res.Tenant(name=name, display_name="Once", etag=current.etag),
        update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        request_id=uuid.uuid4().hex,
    )
    first = await stub.UpdateTenant(request, metadata=admin(tenant).md, timeout=TIMEOUT)
    second = await stub.UpdateTenant(request, metadata=admin(tenant).md, timeout=TIMEOUT)
    assert first.tenant == second.tenant


async def test_update_needs_a_valid_mask_and_the_operator_for_plan(stub: Stub, tenant: str) -> None:
    name = f"tenants/{tenant}"
    error = await fails(
        stub.UpdateTenant(
            pb.UpdateTenantRequest(
                tenant=res.Tenant(name=name, plan="plans/enterprise"),
                update_mask=field_mask_pb2.FieldMask(paths=["plan"]),
            ),
            metadata=admin(tenant).md,
            timeout=TIMEOUT,
        )
    )
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    for paths in ([], ["data_region"], ["etag"]):
        error = await fails(
            stub.UpdateTenant(
                pb.UpdateTenantRequest(
                    tenant=res.Tenant(name=name), update_mask=field_mask_pb2.FieldMask(paths=paths)
                ),
                metadata=OPERATOR.md,
                timeout=TIMEOUT,
            )
        )
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.metadata["field"] == "update_mask"


async def test_tenants_are_isolated(stub: Stub, tenant: str) -> None:
    other = (await create_tenant(stub)).name
    for caller in (admin(tenant), reader(tenant)):
        error = await fails(
            stub.GetTenant(pb.GetTenantRequest(name=other), metadata=caller.md, timeout=TIMEOUT)
        )
        assert error.code == grpc.StatusCode.NOT_FOUND
        assert error.reason == "RESOURCE_NOT_FOUND"
    error = await fails(
        stub.UpdateTenant(
            pb.UpdateTenantRequest(
                tenant=res.Tenant(name=other, display_name="Mine now"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
            metadata=admin(tenant).md,
            timeout=TIMEOUT,
        )
    )
    assert error.code == grpc.StatusCode.NOT_FOUND
    own = await stub.ListTenants(
        pb.ListTenantsRequest(), metadata=reader(tenant).md, timeout=TIMEOUT
    )
    assert [t.name for t in own.tenants] == [f"tenants/{tenant}"]


async def test_reads_need_a_read_scope_and_writes_admin(stub: Stub, tenant: str) -> None:
    name = f"tenants/{tenant}"
    error = await fails(
        stub.GetTenant(pb.GetTenantRequest(name=name), metadata=chatter(tenant).md, timeout=TIMEOUT)
    )
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert error.reason == "SCOPE_MISSING"
    assert error.metadata["scope"] == "control:read"
    error = await fails(
        stub.UpdateTenant(
            pb.UpdateTenantRequest(
                tenant=res.Tenant(name=name, display_name="Nope"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
            metadata=reader(tenant).md,
            timeout=TIMEOUT,
        )
    )
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert error.metadata["scope"] == "admin"


async def test_operator_pages_through_all_tenants(stub: Stub) -> None:
    prefix = unique("page")
    created = sorted([(await create_tenant(stub, f"{prefix}-{i}")).name for i in range(5)])
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        reply = await stub.ListTenants(
            pb.ListTenantsRequest(page_size=2, page_token=token),
            metadata=OPERATOR.md,
            timeout=TIMEOUT,
        )
        assert len(reply.tenants) <= 2
        seen.extend(t.name for t in reply.tenants)
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    assert pages >= 3
    assert seen == sorted(seen)
    assert [name for name in seen if name.startswith(f"tenants/{prefix}")] == created

    error = await fails(
        stub.ListTenants(
            pb.ListTenantsRequest(page_token="not-a-token"), metadata=OPERATOR.md, timeout=TIMEOUT
        )
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.metadata["field"] == "page_token"
    error = await fails(
        stub.ListTenants(pb.ListTenantsRequest(page_size=-1), metadata=OPERATOR.md, timeout=TIMEOUT)
    )
    assert error.metadata["field"] == "page_size"


async def test_plans_are_listed_cheapest_first_with_their_limits(stub: Stub, tenant: str) -> None:
    caller = reader(tenant)
    listed = await stub.ListPlans(pb.ListPlansRequest(), metadata=caller.md, timeout=TIMEOUT)
    everything = [p.name for p in listed.plans]
    # Other tests of the shared session database may add plans; the seeded ones keep their order.
    seeded = ["plans/free", "plans/pro", "plans/enterprise"]
    assert [name for name in everything if name in seeded] == seeded
    fees = [p.pricing.monthly_fee_usd for p in listed.plans]
    assert fees == sorted(fees)
    walked: list[str] = []
    token = ""
    while True:
        page = await stub.ListPlans(
            pb.ListPlansRequest(page_size=1, page_token=token), metadata=caller.md, timeout=TIMEOUT
        )
        walked += [p.name for p in page.plans]
        token = page.next_page_token
        if not token:
            break
    assert walked == everything
    pro = (
        await stub.GetPlan(pb.GetPlanRequest(name="plans/pro"), metadata=caller.md, timeout=TIMEOUT)
    ).plan
    assert pro.limits.requests_per_minute == 600
    assert pro.limits.tokens_per_month == 20_000_000
    assert pro.pricing.monthly_fee_usd == 99
    assert "orders" in pro.features
    error = await fails(
        stub.GetPlan(pb.GetPlanRequest(name="plans/gold"), metadata=caller.md, timeout=TIMEOUT)
    )
    assert error.code == grpc.StatusCode.NOT_FOUND
    error = await fails(
        stub.GetPlan(pb.GetPlanRequest(name="gold"), metadata=caller.md, timeout=TIMEOUT)
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.metadata["field"] == "name"


async def test_caller_without_trusted_metadata_is_unauthenticated(stub: Stub, tenant: str) -> None:
    error = await fails(
        stub.GetTenant(pb.GetTenantRequest(name=f"tenants/{tenant}"), timeout=TIMEOUT)
    )
    assert error.code == grpc.StatusCode.UNAUTHENTICATED
    anonymous = Caller(scopes=("admin",))
    error = await fails(
        stub.ListPlans(pb.ListPlansRequest(), metadata=anonymous.md, timeout=TIMEOUT)
    )
    assert error.code == grpc.StatusCode.UNAUTHENTICATED


async def test_concurrent_retries_create_one_tenant(
    stub: Stub, admin_db: asyncpg.Connection
) -> None:
    request = pb.CreateTenantRequest(
        tenant=res.Tenant(display_name="Race Co", plan="plans/pro"),
        tenant_id=unique("race"),
        request_id=uuid.uuid4().hex,
    )
    replies = await asyncio.gather(
        *(stub.CreateTenant(request, metadata=OPERATOR.md, timeout=TIMEOUT) for _ in range(4))
    )
    assert all(reply.tenant == replies[0].tenant for reply in replies)
    audited = await admin_db.fetchval(
        "SELECT count(*) FROM app.audit_logs WHERE tenant_id = $1", request.tenant_id
    )
    assert audited == 1
