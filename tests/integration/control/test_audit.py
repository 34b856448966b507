"""The audit log: a row for every applied mutation, none for reads or retries, newest first."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import grpc
from google.protobuf import duration_pb2, field_mask_pb2

from supportmesh.control.v1 import control_service_pb2 as pb
from supportmesh.control.v1 import resources_pb2 as res
from supportmesh.spec.v1 import tool_pb2
from tests.integration.control.conftest import (
    OPERATOR,
    TIMEOUT,
    Stub,
    admin,
    create_tenant,
    fails,
    reader,
)

SERVICE = "supportmesh.control.v1.ControlService"


async def _rows(db: asyncpg.Connection, tenant: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT actor, action, resource, request_id, metadata::text AS metadata "
        "FROM app.audit_logs WHERE tenant_id = $1 ORDER BY created_at, log_id",
        tenant,
    )


async def test_every_mutation_is_audited_and_reads_are_not(
    stub: Stub, admin_db: asyncpg.Connection
) -> None:
    created = await create_tenant(stub)
    tenant = created.name.removeprefix("tenants/")
    parent = created.name
    me = admin(tenant)
    rows = await _rows(admin_db, tenant)
    assert [(r["action"], r["resource"], r["actor"]) for r in rows] == [
        (f"{SERVICE}/CreateTenant", parent, "platform:operator")
    ]

    request_id = uuid.uuid4().hex
    mutations: list[Callable[[], Awaitable[Any]]] = [
        lambda: stub.UpdateTenant(
            pb.UpdateTenantRequest(
                tenant=res.Tenant(name=parent, display_name="Audited"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
            metadata=(*me.md, ("x-request-id", request_id)),
            timeout=TIMEOUT,
        ),
        lambda: stub.CreateUser(
            pb.CreateUserRequest(
                parent=parent,
                user=res.User(email="a@example.com", role=res.USER_ROLE_ADMIN),
                request_id="u1",
            ),
            metadata=me.md,
            timeout=TIMEOUT,
        ),
        lambda: stub.CreateApiKey(
            pb.CreateApiKeyRequest(
                parent=parent, api_key=res.ApiKey(scopes=["chat:write"]), request_id="k1"
            ),
            metadata=me.md,
            timeout=TIMEOUT,
        ),
        lambda: stub.SetFeatureFlag(
            pb.SetFeatureFlagRequest(
                name=f"{parent}/featureFlags/critic_review", override=res.FEATURE_FLAG_OVERRIDE_ON
            ),
            metadata=me.md,
            timeout=TIMEOUT,
        ),
        lambda: stub.UpdateDegradeSwitches(
            pb.UpdateDegradeSwitchesRequest(
                degrade_switches=res.DegradeSwitches(
                    name=f"{parent}/degradeSwitches", disable_critique=True
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["disable_critique"]),
            ),
            metadata=me.md,
            timeout=TIMEOUT,
        ),
        lambda: stub.RegisterTool(
            pb.RegisterToolRequest(
                parent=parent,
                spec=tool_pb2.ToolSpec(
                    name="orders.lookup",
                    version="1.0.0",
                    side_effect=tool_pb2.SIDE_EFFECT_READ_ONLY,
                    timeout=duration_pb2.Duration(seconds=2),
                ),
                request_id="t1",
            ),
            metadata=me.md,
            timeout=TIMEOUT,
        ),
        lambda: stub.RegisterAgent(
            pb.RegisterAgentRequest(
                parent=parent,
                manifest=res.AgentManifest(name="faq-agent", version="1.0.0", workflow="faq"),
                request_id="a1",
            ),
            metadata=me.md,
            timeout=TIMEOUT,
        ),
        lambda: stub.SetWorkflowOverride(
            pb.SetWorkflowOverrideRequest(name=f"{parent}/workflowOverrides/faq", version="1.0.0"),
            metadata=me.md,
            timeout=TIMEOUT,
        ),
    ]
    # One after the other: a grpc.aio call starts as soon as it is created.
    replies = [await call() for call in mutations]
    user = replies[1].user
    key = replies[2].api_key
    secret = replies[2].secret
    await stub.RevokeApiKey(
        pb.RevokeApiKeyRequest(name=key.name, reason="rotation"), metadata=me.md, timeout=TIMEOUT
    )
    await stub.DeleteUser(pb.DeleteUserRequest(name=user.name), metadata=me.md, timeout=TIMEOUT)

    rows = await _rows(admin_db, tenant)
    assert [(r["action"].split("/")[1], r["resource"]) for r in rows] == [
        ("CreateTenant", parent),
        ("UpdateTenant", parent),
        ("CreateUser", user.name),
        ("CreateApiKey", key.name),
        ("SetFeatureFlag", f"{parent}/featureFlags/critic_review"),
        ("UpdateDegradeSwitches", f"{parent}/degradeSwitches"),
        ("RegisterTool", f"{parent}/tools/orders.lookup"),
        ("RegisterAgent", f"{parent}/agents/faq-agent"),
        ("SetWorkflowOverride", f"{parent}/workflowOverrides/faq"),
        ("RevokeApiKey", key.name),
        ("DeleteUser", user.name),
    ]
    assert all(r["actor"] == me.subject for r in rows[1:])
    assert rows[1]["request_id"] == request_id
    assert json.loads(rows[1]["metadata"])["update_mask"] == "display_name"
    assert json.loads(rows[9]["metadata"])["reason"] == "rotation"
    assert json.loads(rows[10]["metadata"])["revoked_api_keys"] == ""
    everything = " ".join(str(r["metadata"]) for r in rows)
    assert secret not in everything
    assert secret.split("_", 2)[2] not in everything

    # Reads, failures and retries that change nothing write no rows.
    before = len(rows)
    await stub.GetTenant(
        pb.GetTenantRequest(name=parent), metadata=reader(tenant).md, timeout=TIMEOUT
    )
    await stub.ListUsers(
        pb.ListUsersRequest(parent=parent), metadata=reader(tenant).md, timeout=TIMEOUT
    )
    await stub.ListApiKeys(
        pb.ListApiKeysRequest(parent=parent), metadata=reader(tenant).md, timeout=TIMEOUT
    )
    await stub.ListFeatureFlags(
        pb.ListFeatureFlagsRequest(parent=parent), metadata=reader(tenant).md, timeout=TIMEOUT
    )
    await stub.GetDegradeSwitches(
        pb.GetDegradeSwitchesRequest(name=f"{parent}/degradeSwitches"),
        metadata=reader(tenant).md,
        timeout=TIMEOUT,
    )
    await stub.ListTools(
        pb.ListToolsRequest(parent=parent), metadata=reader(tenant).md, timeout=TIMEOUT
    )
    await stub.ListAuditLogs(
        pb.ListAuditLogsRequest(parent=parent), metadata=reader(tenant).md, timeout=TIMEOUT
    )
    await stub.RevokeApiKey(pb.RevokeApiKeyRequest(name=key.name), metadata=me.md, timeout=TIMEOUT)
    await stub.CreateApiKey(
        pb.CreateApiKeyRequest(
            parent=parent, api_key=res.ApiKey(scopes=["chat:write"]), request_id="k1"
        ),
        metadata=me.md,
        timeout=TIMEOUT,
    )
    await fails(
        stub.CreateUser(
            pb.CreateUserRequest(
                parent=parent, user=res.User(email="bad", role=res.USER_ROLE_ADMIN), request_id="u2"
            ),
            metadata=me.md,
            timeout=TIMEOUT,
        )
    )
    assert len(await _rows(admin_db, tenant)) == before


async def test_list_audit_logs_pages_newest_first_with_filters(stub: Stub) -> None:
    tenant = (await create_tenant(stub)).name.removeprefix("tenants/")
    parent = f"tenants/{tenant}"
    for key in ("critic_review", "faq", "orders", "payments", "sso"):
        await stub.SetFeatureFlag(
            pb.SetFeatureFlagRequest(
                name=f"{parent}/featureFlags/{key}", override=res.FEATURE_FLAG_OVERRIDE_ON
            ),
            metadata=admin(tenant).md,
            timeout=TIMEOUT,
        )
    seen: list[res.AuditLog] = []
    token = ""
    for _ in range(10):
        reply = await stub.ListAuditLogs(
            pb.ListAuditLogsRequest(parent=parent, page_size=2, page_token=token),
            metadata=reader(tenant).md,
            timeout=TIMEOUT,
        )
        assert len(reply.audit_logs) <= 2
        seen.extend(reply.audit_logs)
        token = reply.next_page_token
        if not token:
            break
    assert [log.resource.rsplit("/", 1)[1] for log in seen] == [
        "sso",
        "payments",
        "orders",
        "faq",
        "critic_review",
        tenant,
    ]
    assert all(log.name.startswith(f"{parent}/auditLogs/") for log in seen)
    stamps = [log.create_time.ToNanoseconds() for log in seen]
    assert stamps == sorted(stamps, reverse=True)

    flags_only = await stub.ListAuditLogs(
        pb.ListAuditLogsRequest(parent=parent, action=f"{SERVICE}/SetFeatureFlag"),
        metadata=reader(tenant).md,
        timeout=TIMEOUT,
    )
    assert len(flags_only.audit_logs) == 5
    short = await stub.ListAuditLogs(
        pb.ListAuditLogsRequest(parent=parent, action="SetFeatureFlag"),
        metadata=reader(tenant).md,
        timeout=TIMEOUT,
    )
    assert short.audit_logs == flags_only.audit_logs
    by_operator = await stub.ListAuditLogs(
        pb.ListAuditLogsRequest(parent=parent, actor=OPERATOR.subject),
        metadata=reader(tenant).md,
        timeout=TIMEOUT,
    )
    assert [log.action for log in by_operator.audit_logs] == [f"{SERVICE}/CreateTenant"]
    window = pb.ListAuditLogsRequest(
        parent=parent, start_time=seen[1].create_time, end_time=seen[0].create_time
    )
    within = await stub.ListAuditLogs(window, metadata=reader(tenant).md, timeout=TIMEOUT)
    assert [log.name for log in within.audit_logs] == [seen[1].name]

    other = (await create_tenant(stub)).name
    error = await fails(
        stub.ListAuditLogs(
            pb.ListAuditLogsRequest(parent=other), metadata=admin(tenant).md, timeout=TIMEOUT
        )
    )
    assert error.code == grpc.StatusCode.NOT_FOUND
