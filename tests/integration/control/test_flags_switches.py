"""Feature flags (default, plan, override, effective) and degrade switches (platform OR tenant)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import field_mask_pb2

from supportmesh.control.v1 import control_service_pb2 as pb
from supportmesh.control.v1 import resources_pb2 as res
from tests.integration.control.conftest import (
    OPERATOR,
    TIMEOUT,
    Stub,
    admin,
    create_tenant,
    fails,
    reader,
)


async def _flags(stub: Stub, tenant: str) -> dict[str, res.FeatureFlag]:
    reply = await stub.ListFeatureFlags(
        pb.ListFeatureFlagsRequest(parent=f"tenants/{tenant}"),
        metadata=reader(tenant).md,
        timeout=TIMEOUT,
    )
    return {flag.name.rsplit("/", 1)[1]: flag for flag in reply.feature_flags}


async def _set(
    stub: Stub, tenant: str, key: str, override: res.FeatureFlagOverride.ValueType
) -> res.FeatureFlag:
    request = pb.SetFeatureFlagRequest(
        name=f"tenants/{tenant}/featureFlags/{key}", override=override
    )
    return (
        await stub.SetFeatureFlag(request, metadata=admin(tenant).md, timeout=TIMEOUT)
    ).feature_flag


async def test_flags_resolve_default_plan_and_override(stub: Stub) -> None:
    free = (await create_tenant(stub, plan="plans/free")).name.removeprefix("tenants/")
    pro = (await create_tenant(stub, plan="plans/pro")).name.removeprefix("tenants/")
    on_free, on_pro = await _flags(stub, free), await _flags(stub, pro)
    assert list(on_free) == sorted(on_free)
    assert on_free["streaming_responses"].default_enabled is True
    assert on_free["critic_review"].enabled is False
    assert on_free["experimental_router_bandit"].enabled is False
    assert on_free["orders"].enabled is False  # not in the free plan
    assert on_pro["orders"].default_enabled is True  # the pro plan switches it on
    assert all(flag.override == res.FEATURE_FLAG_OVERRIDE_NONE for flag in on_free.values())
    assert on_free["human_handoff"].description

    forced = await _set(stub, free, "critic_review", res.FEATURE_FLAG_OVERRIDE_ON)
    assert (forced.default_enabled, forced.override, forced.enabled) == (
        False,
        res.FEATURE_FLAG_OVERRIDE_ON,
        True,
    )
    assert forced.update_time.seconds > 0
    off = await _set(stub, free, "streaming_responses", res.FEATURE_FLAG_OVERRIDE_OFF)
    assert (off.default_enabled, off.enabled) == (True, False)
    listed = await _flags(stub, free)
    assert listed["critic_review"].enabled is True
    assert listed["streaming_responses"].enabled is False
    assert (await _flags(stub, pro))["critic_review"].enabled is False  # other tenants unaffected

    cleared = await _set(stub, free, "critic_review", res.FEATURE_FLAG_OVERRIDE_NONE)
    assert (cleared.override, cleared.enabled) == (res.FEATURE_FLAG_OVERRIDE_NONE, False)
    assert not cleared.HasField("update_time")


async def test_flag_errors(stub: Stub, tenant: str) -> None:
    error = await fails(
        stub.SetFeatureFlag(
            pb.SetFeatureFlagRequest(
                name=f"tenants/{tenant}/featureFlags/teleport",
                override=res.FEATURE_FLAG_OVERRIDE_ON,
            ),
            metadata=admin(tenant).md,
            timeout=TIMEOUT,
        )
    )
    assert error.code == grpc.StatusCode.NOT_FOUND
    error = await fails(
        stub.SetFeatureFlag(
            pb.SetFeatureFlagRequest(name=f"tenants/{tenant}/featureFlags/faq"),
            metadata=admin(tenant).md,
            timeout=TIMEOUT,
        )
    )
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.metadata["field"] == "override"
    error = await fails(
        stub.SetFeatureFlag(
            pb.SetFeatureFlagRequest(
                name=f"tenants/{tenant}/featureFlags/faq", override=res.FEATURE_FLAG_OVERRIDE_ON
            ),
            metadata=reader(tenant).md,
            timeout=TIMEOUT,
        )
    )
    assert error.code == grpc.StatusCode.PERMISSION_DENIED


async def test_flags_page(stub: Stub, tenant: str) -> None:
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        reply = await stub.ListFeatureFlags(
            pb.ListFeatureFlagsRequest(parent=f"tenants/{tenant}", page_size=4, page_token=token),
            metadata=reader(tenant).md,
            timeout=TIMEOUT,
        )
        seen.extend(flag.name for flag in reply.feature_flags)
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    assert pages >= 3
    assert seen == sorted(seen)
    assert len(seen) == len(await _flags(stub, tenant))


@pytest.fixture
async def platform_switches(stub: Stub) -> AsyncIterator[None]:
    """Leave the platform-wide switches off after the test (they are shared by the session)."""
    yield
    await stub.UpdateDegradeSwitches(
        pb.UpdateDegradeSwitchesRequest(
            degrade_switches=res.DegradeSwitches(name="degradeSwitches"),
            update_mask=field_mask_pb2.FieldMask(
                paths=["prefer_slm_tiers", "shrink_context", "disable_critique", "reason"]
            ),
        ),
        metadata=OPERATOR.md,
        timeout=TIMEOUT,
    )


async def _switches(stub: Stub, name: str, tenant: str) -> pb.GetDegradeSwitchesResponse:
    return await stub.GetDegradeSwitches(
        pb.GetDegradeSwitchesRequest(name=name), metadata=reader(tenant).md, timeout=TIMEOUT
    )


@pytest.mark.usefixtures("platform_switches")
async def test_degrade_switches_are_platform_or_tenant(stub: Stub, tenant: str) -> None:
    own = f"tenants/{tenant}/degradeSwitches"
    fresh = await _switches(stub, own, tenant)
    assert fresh.degrade_switches.name == own
    assert not fresh.degrade_switches.prefer_slm_tiers
    assert fresh.degrade_switches.etag

    updated = await stub.UpdateDegradeSwitches(
        pb.UpdateDegradeSwitchesRequest(
            degrade_switches=res.DegradeSwitches(
                name=own,
                shrink_context=True,
                reason="tenant traffic spike",
                etag=fresh.degrade_switches.etag,
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["shrink_context", "reason"]),
        ),
        metadata=admin(tenant).md,
        timeout=TIMEOUT,
    )
    assert updated.degrade_switches.shrink_context
    assert updated.degrade_switches.etag != fresh.degrade_switches.etag

    platform = await _switches(stub, "degradeSwitches", tenant)
    await stub.UpdateDegradeSwitches(
        pb.UpdateDegradeSwitchesRequest(
            degrade_switches=res.DegradeSwitches(
                name="degradeSwitches",
                prefer_slm_tiers=True,
                reason="provider outage",
                etag=platform.degrade_switches.etag,
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["prefer_slm_tiers", "reason"]),
        ),
        metadata=OPERATOR.md,
        timeout=TIMEOUT,
    )
    now = await _switches(stub, own, tenant)
    assert not now.degrade_switches.prefer_slm_tiers  # as set on the tenant
    assert now.degrade_switches.shrink_context
    assert now.effective.prefer_slm_tiers  # platform-wide
    assert now.effective.shrink_context  # tenant
    assert not now.effective.disable_critique
    assert "provider outage" in now.effective.reason
    assert "tenant traffic spike" in now.effective.reason
    whole = await _switches(stub, "degradeSwitches", tenant)
    assert whole.effective == whole.degrade_switches
    assert whole.degrade_switches.prefer_slm_tiers
    assert not whole.degrade_switches.shrink_context


async def test_degrade_switch_errors(stub: Stub, tenant: str) -> None:
    own = f"tenants/{tenant}/degradeSwitches"
    mask = field_mask_pb2.FieldMask(paths=["disable_critique"])
    error = await fails(
        stub.UpdateDegradeSwitches(
            pb.UpdateDegradeSwitchesRequest(
                degrade_switches=res.DegradeSwitches(name="degradeSwitches"), update_mask=mask
            ),
            metadata=admin(tenant).md,
            timeout=TIMEOUT,
        )
    )
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    error = await fails(
        stub.UpdateDegradeSwitches(
            pb.UpdateDegradeSwitchesRequest(
                degrade_switches=res.DegradeSwitches(name=own, etag='W/"999"'), update_mask=mask
            ),
            metadata=admin(tenant).md,
            timeout=TIMEOUT,
        )
    )
    assert error.code == grpc.StatusCode.ABORTED
    assert error.reason == "CONFLICT"
    error = await fails(
        stub.UpdateDegradeSwitches(
            pb.UpdateDegradeSwitchesRequest(
                degrade_switches=res.DegradeSwitches(name=own),
                update_mask=field_mask_pb2.FieldMask(paths=["etag"]),
            ),
            metadata=admin(tenant).md,
            timeout=TIMEOUT,
        )
    )
    assert error.metadata["field"] == "update_mask"
    other = (await create_tenant(stub)).name
    error = await fails(_switches(stub, f"{other}/degradeSwitches", tenant))
    assert error.code == grpc.StatusCode.NOT_FOUND
    error = await fails(_switches(stub, "tenants/degradeSwitches", tenant))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
