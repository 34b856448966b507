"""Tool and agent registries, router policy versions and workflow overrides."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2, struct_pb2

from supportmesh.control.v1 import control_service_pb2 as pb
from supportmesh.control.v1 import resources_pb2 as res
from supportmesh.spec.v1 import tier_pb2, tool_pb2
from tests.integration.control.conftest import (
    OPERATOR,
    TIMEOUT,
    Stub,
    admin,
    create_tenant,
    fails,
    reader,
    unique,
)


def _spec(name: str, version: str, **fields: object) -> tool_pb2.ToolSpec:
    schema = struct_pb2.Struct()
    schema.update({"type": "object", "properties": {"order_id": {"type": "string"}}})
    base: dict[str, object] = {
        "name": name,
        "version": version,
        "description": "Look up an order.",
        "input_schema": schema,
        "side_effect": tool_pb2.SIDE_EFFECT_READ_ONLY,
        "timeout": duration_pb2.Duration(seconds=5),
    }
    base.update(fields)
    return tool_pb2.ToolSpec(**base)  # type: ignore[arg-type]


async def _register(stub: Stub, tenant: str, spec: tool_pb2.ToolSpec) -> res.Tool:
    request = pb.RegisterToolRequest(
        parent=f"tenants/{tenant}", spec=spec, request_id=uuid.uuid4().hex
    )
    return (await stub.RegisterTool(request, metadata=admin(tenant).md, timeout=TIMEOUT)).tool


async def test_tool_versions_latest_by_semver(stub: Stub, tenant: str) -> None:
    for version in ("1.0.0", "1.10.0", "1.2.0", "2.0.0-rc.1"):
        tool = await _register(stub, tenant, _spec("orders.lookup", version))
        assert tool.spec.version == version
    name = f"tenants/{tenant}/tools/orders.lookup"
    got = (
        await stub.GetTool(
            pb.GetToolRequest(name=name), metadata=reader(tenant).md, timeout=TIMEOUT
        )
    ).tool
    assert got.name == name
    assert list(got.versions) == ["1.0.0", "1.2.0", "1.10.0", "2.0.0-rc.1"]
    assert got.spec.version == "2.0.0-rc.1"
    assert got.spec.input_schema["type"] == "object"
    assert got.create_time.ToNanoseconds() <= got.update_time.ToNanoseconds()
    old = await stub.GetTool(
        pb.GetToolRequest(name=name, version="1.2.0"), metadata=reader(tenant).md, timeout=TIMEOUT
    )
    assert old.tool.spec.version == "1.2.0"
    error = await fails(
        stub.GetTool(
            pb.GetToolRequest(name=name, version="9.9.9"),
            metadata=reader(tenant).md,
            timeout=TIMEOUT,
        )
    )
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.metadata["field"] == "version"


async def test_reregistering_a_version(stub: Stub, tenant: str) -> None:
    first = await _register(stub, tenant, _spec("crm.note", "1.0.0"))
    same = await _register(stub, tenant, _spec("crm.note", "1.0.0"))
    assert same == first
    error = await fails(
        stub.RegisterTool(
            pb.RegisterToolRequest(
                parent=f"tenants/{tenant}",
                spec=_spec("crm.note", "1.0.0", description="Something else."),
                request_id="r",
            ),
            metadata=admin(tenant).md,
            timeout=TIMEOUT,
        )
    )
    assert error.code == grpc.StatusCode.ALREADY_EXISTS
    assert error.reason == "RESOURCE_EXISTS"
    assert error.metadata["field"] == "spec.version"


async def test_tool_spec_validation(stub: Stub, tenant: str) -> None:
    cases = {
        "spec.name": _spec("", "1.0.0"),
        "spec.version": _spec("a.tool", "1.0"),
        "spec.side_effect": _spec("a.tool", "1.0.0", side_effect=tool_pb2.SIDE_EFFECT_UNSPECIFIED),
        "spec.compensation_tool": _spec(
            "a.tool", "1.0.0", side_effect=tool_pb2.SIDE_EFFECT_COMPENSATABLE
        ),
        "spec.timeout": _spec("a.tool", "1.0.0", timeout=duration_pb2.Duration()),
    }
    for field, spec in cases.items():
        request = pb.RegisterToolRequest(parent=f"tenants/{tenant}", spec=spec, request_id="r")
        error = await fails(stub.RegisterTool(request, metadata=admin(tenant).md, timeout=TIMEOUT))
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT, field
        assert error.metadata["field"] == field

    charge = _spec(
        "payment.charge",
        "1.0.0",
        side_effect=tool_pb2.SIDE_EFFECT_COMPENSATABLE,
        compensation_tool="payment.refund",
    )
    request = pb.RegisterToolRequest(parent=f"tenants/{tenant}", spec=charge, request_id="r")
    error = await fails(stub.RegisterTool(request, metadata=admin(tenant).md, timeout=TIMEOUT))
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "TOOL_UNKNOWN"
    await _register(
        stub,
        tenant,
        _spec("payment.refund", "1.0.0", side_effect=tool_pb2.SIDE_EFFECT_IRREVERSIBLE),
    )
    registered = await _register(stub, tenant, charge)
    assert registered.spec.compensation_tool == "payment.refund"


async def test_tools_page_and_are_isolated(stub: Stub, tenant: str) -> None:
    for index in range(5):
        await _register(stub, tenant, _spec(f"tool.n{index}", "1.0.0"))
        await _register(stub, tenant, _spec(f"tool.n{index}", "1.1.0"))
    seen: list[res.Tool] = []
    token = ""
    for _ in range(10):
        reply = await stub.ListTools(
            pb.ListToolsRequest(parent=f"tenants/{tenant}", page_size=2, page_token=token),
            metadata=reader(tenant).md,
            timeout=TIMEOUT,
        )
        seen.extend(reply.tools)
        token = reply.next_page_token
        if not token:
            break
    assert [tool.name.rsplit("/", 1)[1] for tool in seen] == [f"tool.n{i}" for i in range(5)]
    assert all(list(tool.versions) == ["1.0.0", "1.1.0"] for tool in seen)
    assert all(tool.spec.version == "1.1.0" for tool in seen)

    intruder = (await create_tenant(stub)).name.removeprefix("tenants/")
    error = await fails(
        stub.GetTool(
            pb.GetToolRequest(name=f"tenants/{tenant}/tools/tool.n0"),
            metadata=admin(intruder).md,
            timeout=TIMEOUT,
        )
    )
    assert error.code == grpc.StatusCode.NOT_FOUND
    error = await fails(
        stub.GetTool(
            pb.GetToolRequest(name=f"tenants/{intruder}/tools/tool.n0"),
            metadata=admin(intruder).md,
            timeout=TIMEOUT,
        )
    )
    assert error.code == grpc.StatusCode.NOT_FOUND  # the intruder's own registry has no such tool
    empty = await stub.ListTools(
        pb.ListToolsRequest(parent=f"tenants/{intruder}"),
        metadata=admin(intruder).md,
        timeout=TIMEOUT,
    )
    assert list(empty.tools) == []


async def test_agent_registry(stub: Stub) -> None:
    tenant = (await create_tenant(stub, plan="plans/free")).name.removeprefix("tenants/")
    await _register(stub, tenant, _spec("orders.lookup", "1.0.0"))
    manifest = res.AgentManifest(
        name="faq-agent",
        version="1.0.0",
        workflow="faq",
        allowed_tools=["orders.lookup"],
        allowed_tiers=[tier_pb2.SLM_A],
        max_tokens_per_run=5000,
    )
    request = pb.RegisterAgentRequest(
        parent=f"tenants/{tenant}", manifest=manifest, request_id="a1"
    )
    agent = (await stub.RegisterAgent(request, metadata=admin(tenant).md, timeout=TIMEOUT)).agent
    assert agent.name == f"tenants/{tenant}/agents/faq-agent"
    assert agent.manifest == manifest
    newer = res.AgentManifest()
    newer.CopyFrom(manifest)
    newer.version = "1.1.0"
    request = pb.RegisterAgentRequest(parent=f"tenants/{tenant}", manifest=newer, request_id="a2")
    await stub.RegisterAgent(request, metadata=admin(tenant).md, timeout=TIMEOUT)
    got = await stub.GetAgent(
        pb.GetAgentRequest(name=agent.name), metadata=reader(tenant).md, timeout=TIMEOUT
    )
    assert list(got.agent.versions) == ["1.0.0", "1.1.0"]
    assert got.agent.manifest.version == "1.1.0"
    listed = await stub.ListAgents(
        pb.ListAgentsRequest(parent=f"tenants/{tenant}"),
        metadata=reader(tenant).md,
        timeout=TIMEOUT,
    )
    assert [a.name for a in listed.agents] == [agent.name]

    bad: dict[str, tuple[grpc.StatusCode, res.AgentManifest]] = {
        "manifest.workflow": (
            grpc.StatusCode.INVALID_ARGUMENT,
            res.AgentManifest(name="x", version="1.0.0"),
        ),
        "manifest.allowed_tools": (
            grpc.StatusCode.FAILED_PRECONDITION,
            res.AgentManifest(
                name="x", version="1.0.0", workflow="faq", allowed_tools=["nope.tool"]
            ),
        ),
        "manifest.allowed_tiers": (
            grpc.StatusCode.FAILED_PRECONDITION,  # the free plan has no LLM tier
            res.AgentManifest(
                name="x", version="1.0.0", workflow="faq", allowed_tiers=[tier_pb2.LLM]
            ),
        ),
    }
    for field, (code, wrong) in bad.items():
        request = pb.RegisterAgentRequest(
            parent=f"tenants/{tenant}", manifest=wrong, request_id="bad"
        )
        error = await fails(stub.RegisterAgent(request, metadata=admin(tenant).md, timeout=TIMEOUT))
        assert (error.code, error.metadata["field"]) == (code, field)
    changed = res.AgentManifest()
    changed.CopyFrom(manifest)
    changed.workflow = "orders"
    request = pb.RegisterAgentRequest(parent=f"tenants/{tenant}", manifest=changed, request_id="a3")
    error = await fails(stub.RegisterAgent(request, metadata=admin(tenant).md, timeout=TIMEOUT))
    assert error.code == grpc.StatusCode.ALREADY_EXISTS


@pytest.fixture
async def restore_policy_versions(admin_db: asyncpg.Connection) -> AsyncIterator[None]:
    """Policy versions are platform-wide and the router serves them: put the table back after."""
    before = await admin_db.fetch("SELECT version, status FROM app.policy_versions")
    yield
    async with admin_db.transaction():
        await admin_db.execute(
            "DELETE FROM app.policy_versions WHERE NOT (version = ANY($1::text[]))",
            [row["version"] for row in before],
        )
        for row in before:
            await admin_db.execute(
                "UPDATE app.policy_versions SET status = $2 WHERE version = $1",
                row["version"],
                row["status"],
            )


async def _register_policy(
    stub: Stub, version: str, status: res.PolicyVersionStatus.ValueType
) -> res.PolicyVersion:
    request = pb.RegisterPolicyVersionRequest(
        policy_version=res.PolicyVersion(
            version=version,
            artifact_uri=f"file:///models/router/{version}",
            metrics={"misroute_rate": 0.05},
            status=status,
            canary_percent=10,
            canary_tenants=["acme-corp"],
        ),
        request_id=uuid.uuid4().hex,
    )
    return (
        await stub.RegisterPolicyVersion(request, metadata=OPERATOR.md, timeout=TIMEOUT)
    ).policy_version


async def _update_policy(
    stub: Stub, name: str, paths: list[str], **fields: object
) -> res.PolicyVersion:
    request = pb.UpdatePolicyVersionRequest(
        policy_version=res.PolicyVersion(name=name, **fields),  # type: ignore[arg-type]
        update_mask=field_mask_pb2.FieldMask(paths=paths),
    )
    return (
        await stub.UpdatePolicyVersion(request, metadata=OPERATOR.md, timeout=TIMEOUT)
    ).policy_version


@pytest.mark.usefixtures("restore_policy_versions")
async def test_policy_version_rollout(stub: Stub, tenant: str) -> None:
    first = unique("p")
    canary = await _register_policy(stub, first, res.POLICY_VERSION_STATUS_CANARY)
    assert canary.name == f"policyVersions/{first}"
    assert dict(canary.metrics) == {"misroute_rate": 0.05}
    again = await _register_policy(stub, first, res.POLICY_VERSION_STATUS_CANARY)
    assert again == canary
    error = await fails(
        stub.RegisterPolicyVersion(
            pb.RegisterPolicyVersionRequest(
                policy_version=res.PolicyVersion(
                    version=unique("p"),
                    artifact_uri="file:///m",
                    status=res.POLICY_VERSION_STATUS_STABLE,
                ),
                request_id="r",
            ),
            metadata=OPERATOR.md,
            timeout=TIMEOUT,
        )
    )
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION

    stable = await _update_policy(
        stub, canary.name, ["status"], status=res.POLICY_VERSION_STATUS_STABLE
    )
    assert stable.status == res.POLICY_VERSION_STATUS_STABLE
    second = await _register_policy(stub, unique("p"), res.POLICY_VERSION_STATUS_CANARY)
    widened = await _update_policy(
        stub,
        second.name,
        ["canary_percent", "canary_tenants"],
        canary_percent=8,
        canary_tenants=[tenant],
    )
    assert (widened.canary_percent, list(widened.canary_tenants)) == (8, [tenant])
    error = await fails(
        stub.UpdatePolicyVersion(
            pb.UpdatePolicyVersionRequest(
                policy_version=res.PolicyVersion(name=second.name, canary_percent=101),
                update_mask=field_mask_pb2.FieldMask(paths=["canary_percent"]),
            ),
            metadata=OPERATOR.md,
            timeout=TIMEOUT,
        )
    )
    assert (error.code, error.metadata["field"]) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "policy_version.canary_percent",
    )
    error = await fails(
        stub.UpdatePolicyVersion(
            pb.UpdatePolicyVersionRequest(
                policy_version=res.PolicyVersion(
                    name=stable.name, status=res.POLICY_VERSION_STATUS_RETIRED
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["status"]),
            ),
            metadata=OPERATOR.md,
            timeout=TIMEOUT,
        )
    )
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION

    await _update_policy(stub, second.name, ["status"], status=res.POLICY_VERSION_STATUS_STABLE)
    listed = await stub.ListPolicyVersions(
        pb.ListPolicyVersionsRequest(status=res.POLICY_VERSION_STATUS_STABLE),
        metadata=reader(tenant).md,
        timeout=TIMEOUT,
    )
    assert [v.name for v in listed.policy_versions] == [second.name]  # exactly one stable
    walked: list[res.PolicyVersion] = []
    token = ""
    for _ in range(1000):
        page = await stub.ListPolicyVersions(
            pb.ListPolicyVersionsRequest(page_size=1, page_token=token),
            metadata=reader(tenant).md,
            timeout=TIMEOUT,
        )
        assert len(page.policy_versions) <= 1
        walked.extend(page.policy_versions)
        token = page.next_page_token
        if not token:
            break
    mine = [v for v in walked if v.name in (canary.name, second.name)]
    assert [v.name for v in mine] == [second.name, canary.name]  # newest first
    assert mine[1].status == res.POLICY_VERSION_STATUS_RETIRED
    # A tenant never sees other tenants' ids among the canary tenants; the operator does.
    assert list(mine[0].canary_tenants) == [tenant]
    assert (list(mine[1].canary_tenants), mine[1].canary_percent) == ([], 0)
    operator_view = await stub.ListPolicyVersions(
        pb.ListPolicyVersionsRequest(page_size=1000), metadata=OPERATOR.md, timeout=TIMEOUT
    )
    (first_seen,) = [v for v in operator_view.policy_versions if v.name == canary.name]
    assert list(first_seen.canary_tenants) == ["acme-corp"]

    error = await fails(
        stub.RegisterPolicyVersion(
            pb.RegisterPolicyVersionRequest(
                policy_version=res.PolicyVersion(
                    version=unique("p"),
                    artifact_uri="file:///m",
                    status=res.POLICY_VERSION_STATUS_CANARY,
                ),
                request_id="r",
            ),
            metadata=admin(tenant).md,
            timeout=TIMEOUT,
        )
    )
    assert error.code == grpc.StatusCode.PERMISSION_DENIED


async def _refused_percent(call: Awaitable[Any]) -> None:
    error = await fails(call)
    assert (error.code, error.reason, error.metadata["field"]) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "VALIDATION_FAILED",
        "policy_version.canary_percent",
    )
    assert "between 5 and 10" in error.message


@pytest.mark.usefixtures("restore_policy_versions")
async def test_a_canary_decides_5_to_10_percent_of_traffic(
    stub: Stub, admin_db: asyncpg.Connection
) -> None:
    def register(
        percent: int, status: res.PolicyVersionStatus.ValueType
    ) -> Awaitable[pb.RegisterPolicyVersionResponse]:
        version = unique("p")
        return stub.RegisterPolicyVersion(
            pb.RegisterPolicyVersionRequest(
                policy_version=res.PolicyVersion(
                    version=version, artifact_uri=f"file:///models/router/{version}",
                    status=status, canary_percent=percent,
                ),
                request_id=uuid.uuid4().hex,
            ),
            metadata=OPERATOR.md,
            timeout=TIMEOUT,
        )  # fmt: skip

    def update(
        name: str, paths: list[str], reason: str = "", **fields: object
    ) -> Awaitable[pb.UpdatePolicyVersionResponse]:
        return stub.UpdatePolicyVersion(
            pb.UpdatePolicyVersionRequest(
                policy_version=res.PolicyVersion(name=name, **fields),  # type: ignore[arg-type]
                update_mask=field_mask_pb2.FieldMask(paths=paths),
                reason=reason,
            ),
            metadata=OPERATOR.md,
            timeout=TIMEOUT,
        )

    canary = res.POLICY_VERSION_STATUS_CANARY
    for percent in (0, 4, 11, 50, 100):
        await _refused_percent(register(percent, canary))
    low = (await register(5, canary)).policy_version
    assert low.canary_percent == 5
    high = await _update_policy(stub, low.name, ["canary_percent"], canary_percent=10)
    assert high.canary_percent == 10
    for percent in (4, 11):
        await _refused_percent(update(low.name, ["canary_percent"], canary_percent=percent))
    stored = await admin_db.fetchval(
        "SELECT canary_percent FROM app.policy_versions WHERE version = $1", low.version
    )
    assert stored == 10

    # A version serving no canary traffic may keep any share, but becomes a canary only
    # with one in range.
    parked = (await register(50, res.POLICY_VERSION_STATUS_RETIRED)).policy_version
    assert parked.canary_percent == 50
    await _refused_percent(update(parked.name, ["status"], status=canary))
    revived = await _update_policy(
        stub, parked.name, ["status", "canary_percent"], status=canary, canary_percent=7
    )
    assert (revived.status, revived.canary_percent) == (canary, 7)

    # A rollback's reason is kept in its audit entry; an overlong one is refused.
    error = await fails(
        update(low.name, ["status"], "x" * 1001, status=res.POLICY_VERSION_STATUS_RETIRED)
    )
    assert (error.code, error.metadata["field"]) == (grpc.StatusCode.INVALID_ARGUMENT, "reason")
    reason = "canary rolled back: 2/40 succeeded vs 38/40, margin 0.050"
    await update(low.name, ["status"], reason, status=res.POLICY_VERSION_STATUS_RETIRED)
    audited = await admin_db.fetch(
        "SELECT metadata->>'status' AS status, metadata->>'reason' AS reason "
        "FROM app.platform_audit_logs WHERE resource = $1 ORDER BY created_at",
        low.name,
    )
    assert [(row["status"], row["reason"]) for row in audited] == [
        ("CANARY", None),  # registered
        ("CANARY", None),  # share changed
        ("RETIRED", reason),
    ]


async def test_workflow_overrides(stub: Stub, tenant: str) -> None:
    name = f"tenants/{tenant}/workflowOverrides/faq"
    unpinned = await stub.GetWorkflowOverride(
        pb.GetWorkflowOverrideRequest(name=name), metadata=reader(tenant).md, timeout=TIMEOUT
    )
    assert unpinned.workflow_override == res.WorkflowOverride(name=name)
    pinned = await stub.SetWorkflowOverride(
        pb.SetWorkflowOverrideRequest(name=name, version="1.2.0"),
        metadata=admin(tenant).md,
        timeout=TIMEOUT,
    )
    assert pinned.workflow_override.version == "1.2.0"
    assert pinned.workflow_override.update_time.seconds > 0
    got = await stub.GetWorkflowOverride(
        pb.GetWorkflowOverrideRequest(name=name), metadata=reader(tenant).md, timeout=TIMEOUT
    )
    assert got.workflow_override == pinned.workflow_override
    cleared = await stub.SetWorkflowOverride(
        pb.SetWorkflowOverrideRequest(name=name), metadata=admin(tenant).md, timeout=TIMEOUT
    )
    assert cleared.workflow_override == res.WorkflowOverride(name=name)
    error = await fails(
        stub.SetWorkflowOverride(
            pb.SetWorkflowOverrideRequest(name=name, version="latest"),
            metadata=admin(tenant).md,
            timeout=TIMEOUT,
        )
    )
    assert (error.code, error.metadata["field"]) == (grpc.StatusCode.INVALID_ARGUMENT, "version")
    other = (await create_tenant(stub)).name
    error = await fails(
        stub.GetWorkflowOverride(
            pb.GetWorkflowOverrideRequest(name=f"{other}/workflowOverrides/faq"),
            metadata=admin(tenant).md,
            timeout=TIMEOUT,
        )
    )
    assert error.code == grpc.StatusCode.NOT_FOUND


@pytest.mark.usefixtures("restore_policy_versions")
async def test_platform_changes_are_audited(stub: Stub, admin_db: asyncpg.Connection) -> None:
    version = unique("p")
    created = await _register_policy(stub, version, res.POLICY_VERSION_STATUS_CANARY)
    await _update_policy(stub, created.name, ["status"], status=res.POLICY_VERSION_STATUS_RETIRED)
    rows = await admin_db.fetch(
        "SELECT actor, action, resource, metadata::text AS metadata "
        "FROM app.platform_audit_logs WHERE resource = $1 ORDER BY created_at",
        created.name,
    )
    assert [row["action"].rpartition("/")[2] for row in rows] == [
        "RegisterPolicyVersion",
        "UpdatePolicyVersion",
    ]
    assert {row["actor"] for row in rows} == {"platform:operator"}
    assert '"status": "RETIRED"' in rows[1]["metadata"]
