"""ControlService servicer: a thin adapter from the contract to the control-plane modules."""

# ruff: noqa: N802  (method names are the gRPC method names)

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from services.control import (
    agents,
    audit,
    degrade,
    flags,
    keys,
    plans,
    policies,
    tenants,
    tools,
    users,
    workflows,
)
from supportmesh.control.v1 import control_service_pb2 as pb
from supportmesh.control.v1 import control_service_pb2_grpc as pb_grpc

Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True)
class Repositories:
    """The control plane's logic, one object per resource group."""

    tenants: tenants.Tenants
    plans: plans.Plans
    users: users.Users
    keys: keys.ApiKeys
    flags: flags.FeatureFlags
    switches: degrade.DegradeSwitches
    tools: tools.Tools
    agents: agents.Agents
    policies: policies.PolicyVersions
    workflows: workflows.WorkflowOverrides
    audit: audit.AuditLogs

    @classmethod
    def over(cls, engine: AsyncEngine) -> Repositories:
        """Every repository over one engine."""
        return cls(
            tenants=tenants.Tenants(engine),
            plans=plans.Plans(engine),
            users=users.Users(engine),
            keys=keys.ApiKeys(engine),
            flags=flags.FeatureFlags(engine),
            switches=degrade.DegradeSwitches(engine),
            tools=tools.Tools(engine),
            agents=agents.Agents(engine),
            policies=policies.PolicyVersions(engine),
            workflows=workflows.WorkflowOverrides(engine),
            audit=audit.AuditLogs(engine),
        )


class ControlServicer(pb_grpc.ControlServiceServicer):
    """Proto in, repository call, proto out; errors are raised as DomainErrors."""

    def __init__(self, repositories: Repositories) -> None:
        """Serve from ``repositories``."""
        self._r = repositories

    async def CreateTenant(
        self, request: pb.CreateTenantRequest, context: Context
    ) -> pb.CreateTenantResponse:
        """Create a tenant."""
        return pb.CreateTenantResponse(tenant=await self._r.tenants.create(request))

    async def GetTenant(
        self, request: pb.GetTenantRequest, context: Context
    ) -> pb.GetTenantResponse:
        """Return a tenant."""
        return pb.GetTenantResponse(tenant=await self._r.tenants.get(request))

    async def ListTenants(
        self, request: pb.ListTenantsRequest, context: Context
    ) -> pb.ListTenantsResponse:
        """List tenants."""
        found, token = await self._r.tenants.list(request)
        return pb.ListTenantsResponse(tenants=found, next_page_token=token)

    async def UpdateTenant(
        self, request: pb.UpdateTenantRequest, context: Context
    ) -> pb.UpdateTenantResponse:
        """Change a tenant."""
        return pb.UpdateTenantResponse(tenant=await self._r.tenants.update(request))

    async def GetPlan(self, request: pb.GetPlanRequest, context: Context) -> pb.GetPlanResponse:
        """Return a plan."""
        return pb.GetPlanResponse(plan=await self._r.plans.get(request))

    async def ListPlans(
        self, request: pb.ListPlansRequest, context: Context
    ) -> pb.ListPlansResponse:
        """List plans."""
        found, token = await self._r.plans.list(request)
        return pb.ListPlansResponse(plans=found, next_page_token=token)

    async def CreateUser(
        self, request: pb.CreateUserRequest, context: Context
    ) -> pb.CreateUserResponse:
        """Add a user."""
        return pb.CreateUserResponse(user=await self._r.users.create(request))

    async def ListUsers(
        self, request: pb.ListUsersRequest, context: Context
    ) -> pb.ListUsersResponse:
        """List users."""
        found, token = await self._r.users.list(request)
        return pb.ListUsersResponse(users=found, next_page_token=token)

    async def DeleteUser(
        self, request: pb.DeleteUserRequest, context: Context
    ) -> pb.DeleteUserResponse:
        """Remove a user."""
        await self._r.users.delete(request)
        return pb.DeleteUserResponse()

    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: Context
    ) -> pb.CreateApiKeyResponse:
        """Create an API key."""
        key, secret = await self._r.keys.create(request)
        return pb.CreateApiKeyResponse(api_key=key, secret=secret)

    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: Context
    ) -> pb.ListApiKeysResponse:
        """List API keys."""
        found, token = await self._r.keys.list(request)
        return pb.ListApiKeysResponse(api_keys=found, next_page_token=token)

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: Context
    ) -> pb.RevokeApiKeyResponse:
        """Revoke an API key."""
        return pb.RevokeApiKeyResponse(api_key=await self._r.keys.revoke(request))

    async def ListFeatureFlags(
        self, request: pb.ListFeatureFlagsRequest, context: Context
    ) -> pb.ListFeatureFlagsResponse:
        """List feature flags."""
        found, token = await self._r.flags.list(request)
        return pb.ListFeatureFlagsResponse(feature_flags=found, next_page_token=token)

    async def SetFeatureFlag(
        self, request: pb.SetFeatureFlagRequest, context: Context
    ) -> pb.SetFeatureFlagResponse:
        """Set or clear a flag override."""
        return pb.SetFeatureFlagResponse(feature_flag=await self._r.flags.set(request))

    async def GetDegradeSwitches(
        self, request: pb.GetDegradeSwitchesRequest, context: Context
    ) -> pb.GetDegradeSwitchesResponse:
        """Return degrade switches as set and as in force."""
        as_set, in_force = await self._r.switches.get(request)
        return pb.GetDegradeSwitchesResponse(degrade_switches=as_set, effective=in_force)

    async def UpdateDegradeSwitches(
        self, request: pb.UpdateDegradeSwitchesRequest, context: Context
    ) -> pb.UpdateDegradeSwitchesResponse:
        """Flip degrade switches."""
        return pb.UpdateDegradeSwitchesResponse(
            degrade_switches=await self._r.switches.update(request)
        )

    async def RegisterTool(
        self, request: pb.RegisterToolRequest, context: Context
    ) -> pb.RegisterToolResponse:
        """Register a tool version."""
        return pb.RegisterToolResponse(tool=await self._r.tools.register(request))

    async def GetTool(self, request: pb.GetToolRequest, context: Context) -> pb.GetToolResponse:
        """Return a tool."""
        return pb.GetToolResponse(tool=await self._r.tools.get(request))

    async def ListTools(
        self, request: pb.ListToolsRequest, context: Context
    ) -> pb.ListToolsResponse:
        """List tools."""
        found, token = await self._r.tools.list(request)
        return pb.ListToolsResponse(tools=found, next_page_token=token)

    async def RegisterAgent(
        self, request: pb.RegisterAgentRequest, context: Context
    ) -> pb.RegisterAgentResponse:
        """Register an agent manifest version."""
        return pb.RegisterAgentResponse(agent=await self._r.agents.register(request))

    async def GetAgent(self, request: pb.GetAgentRequest, context: Context) -> pb.GetAgentResponse:
        """Return an agent."""
        return pb.GetAgentResponse(agent=await self._r.agents.get(request))

    async def ListAgents(
        self, request: pb.ListAgentsRequest, context: Context
    ) -> pb.ListAgentsResponse:
        """List agents."""
        found, token = await self._r.agents.list(request)
        return pb.ListAgentsResponse(agents=found, next_page_token=token)

    async def RegisterPolicyVersion(
        self, request: pb.RegisterPolicyVersionRequest, context: Context
    ) -> pb.RegisterPolicyVersionResponse:
        """Record a router policy version."""
        return pb.RegisterPolicyVersionResponse(
            policy_version=await self._r.policies.register(request)
        )

    async def ListPolicyVersions(
        self, request: pb.ListPolicyVersionsRequest, context: Context
    ) -> pb.ListPolicyVersionsResponse:
        """List router policy versions."""
        found, token = await self._r.policies.list(request)
        return pb.ListPolicyVersionsResponse(policy_versions=found, next_page_token=token)

    async def UpdatePolicyVersion(
        self, request: pb.UpdatePolicyVersionRequest, context: Context
    ) -> pb.UpdatePolicyVersionResponse:
        """Change a policy version's rollout."""
        return pb.UpdatePolicyVersionResponse(policy_version=await self._r.policies.update(request))

    async def SetWorkflowOverride(
        self, request: pb.SetWorkflowOverrideRequest, context: Context
    ) -> pb.SetWorkflowOverrideResponse:
        """Pin or unpin a workflow version."""
        return pb.SetWorkflowOverrideResponse(
            workflow_override=await self._r.workflows.set(request)
        )

    async def GetWorkflowOverride(
        self, request: pb.GetWorkflowOverrideRequest, context: Context
    ) -> pb.GetWorkflowOverrideResponse:
        """Return a workflow pin."""
        return pb.GetWorkflowOverrideResponse(
            workflow_override=await self._r.workflows.get(request)
        )

    async def ListAuditLogs(
        self, request: pb.ListAuditLogsRequest, context: Context
    ) -> pb.ListAuditLogsResponse:
        """List audit log entries."""
        found, token = await self._r.audit.list(request)
        return pb.ListAuditLogsResponse(audit_logs=found, next_page_token=token)
