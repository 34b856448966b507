"""The scope table covers exactly the methods in the descriptor set, and grants as documented."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2

from services.edge import scopes
from services.kit import gateway
from services.kit.tenancy import ADMIN_SCOPE, PLATFORM_ADMIN_SCOPE


def descriptor_methods() -> set[str]:
    files = descriptor_pb2.FileDescriptorSet.FromString(gateway.DESCRIPTOR_PATH.read_bytes())
    return {
        f"/{file.package}.{service.name}/{method.name}"
        for file in files.file
        for service in file.service
        for method in service.method
    }


def test_every_rpc_in_the_descriptor_set_has_a_scope() -> None:
    methods = descriptor_methods()
    assert methods, "the descriptor set lists no service"
    assert sorted(methods - set(scopes.METHOD_SCOPES)) == []


def test_the_table_names_no_method_that_does_not_exist() -> None:
    assert sorted(set(scopes.METHOD_SCOPES) - descriptor_methods()) == []


def test_public_methods_match_the_routes_without_ext_authz() -> None:
    public = {m for m, scope in scopes.METHOD_SCOPES.items() if scope == scopes.PUBLIC}
    internal = {m for m, scope in scopes.METHOD_SCOPES.items() if scope == scopes.INTERNAL}
    assert public == set(gateway.PUBLIC_METHODS)
    assert internal == set(gateway.INTERNAL_METHODS)


@pytest.mark.parametrize(
    ("method", "scope"),
    [
        ("/supportmesh.router.v1.RouterService/Decide", "router:decide"),
        ("/supportmesh.orchestrator.v1.OrchestratorService/SendChatMessage", "chat:write"),
        ("/supportmesh.orchestrator.v1.OrchestratorService/GetRun", "runs:read"),
        ("/supportmesh.control.v1.ControlService/ListApiKeys", "control:read"),
        ("/supportmesh.control.v1.ControlService/CreateApiKey", ADMIN_SCOPE),
        ("/supportmesh.control.v1.ControlService/CreateTenant", PLATFORM_ADMIN_SCOPE),
        ("/supportmesh.knowledge.v1.KnowledgeService/Search", "knowledge:read"),
        ("/supportmesh.billing.v1.BillingService/GetUsage", "billing:read"),
        ("/supportmesh.analytics.v1.AnalyticsService/GetTenantKpis", "analytics:read"),
    ],
)
def test_examples_from_the_issue(method: str, scope: str) -> None:
    assert scopes.required_scope(method) == scope


def test_unknown_methods_are_not_exposed() -> None:
    assert scopes.required_scope("/supportmesh.router.v1.RouterService/Nope") is None


def test_grants() -> None:
    decide = "router:decide"
    assert scopes.grants({decide}, decide, platform_admin=False)
    assert not scopes.grants({"chat:write"}, decide, platform_admin=False)
    assert scopes.grants({ADMIN_SCOPE}, decide, platform_admin=False)
    assert not scopes.grants({ADMIN_SCOPE}, PLATFORM_ADMIN_SCOPE, platform_admin=False)
    assert scopes.grants(set(), PLATFORM_ADMIN_SCOPE, platform_admin=True)
    assert scopes.grants(set(), decide, platform_admin=True)
    assert not scopes.grants({ADMIN_SCOPE}, scopes.INTERNAL, platform_admin=True)
    assert scopes.grants(set(), scopes.PUBLIC, platform_admin=False)


def test_narrow() -> None:
    held = ("chat:write", "router:decide")
    assert scopes.narrow(held, []) == ["chat:write", "router:decide"]
    assert scopes.narrow(held, ["chat:write"]) == ["chat:write"]
    assert scopes.narrow(held, ["admin"]) is None
    assert scopes.narrow((ADMIN_SCOPE,), ["knowledge:read"]) == ["knowledge:read"]
    assert scopes.narrow((ADMIN_SCOPE,), [PLATFORM_ADMIN_SCOPE]) is None
    assert scopes.narrow((ADMIN_SCOPE,), ["made:up"]) is None
