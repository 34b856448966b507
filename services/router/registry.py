"""The router's view of the policy-version registry and the models it serves.

The control plane owns ``app.policy_versions``; the router only reads it (platform-wide, no
tenant) every few seconds, loads each new artifact off the event loop, and picks per
decision the STABLE version or, for a CANARY's tenants, the canary on its share of traffic.
Without a STABLE row it serves the default artifact (``ROUTER_MODEL_URI``, else the one
shipped in data/router/model); a version whose artifact does not load is served by the
rule policy, with the reason.

Status changes go through ``ControlService.UpdatePolicyVersion`` (the control plane writes
the audit entry, with the rollback's reason: version, tenant, both arms' success rates and
sample sizes, margin), never into the table. A rolled-back version stops being served by this
replica at once, whether or not the call succeeds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from google.protobuf import field_mask_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.kit import context, db
from services.router import canary, model
from services.router.metrics import RouterMetrics
from supportmesh.control.v1 import control_service_pb2 as control_pb
from supportmesh.control.v1 import control_service_pb2_grpc as control_grpc
from supportmesh.control.v1 import resources_pb2

_log = logging.getLogger("supportmesh.router.registry")

# The control plane keeps at most this much of an UpdatePolicyVersion reason.
MAX_REASON_CHARS = 1000

_ROWS = text(
    "SELECT version, artifact_uri, status, canary_percent, canary_tenants "
    "FROM app.policy_versions WHERE status IN ('STABLE', 'CANARY') ORDER BY created_at DESC"
)


@dataclass(frozen=True)
class VersionRow:
    """One live row of ``app.policy_versions``."""

    version: str
    artifact_uri: str
    status: str
    canary_percent: int = 0
    canary_tenants: tuple[str, ...] = ()


@dataclass(frozen=True)
class Selection:
    """Which version decides one request, and its model (None: the rule policy decides)."""

    version: str
    model: model.TierModel | None
    problem: str = ""
    arm: str = ""
    canary_version: str = ""


@dataclass(frozen=True)
class RollbackAttempt:
    """What an automatic rollback did."""

    version: str
    tenant: str
    reason: str
    called: bool
    ok: bool
    error: str = ""


@dataclass
class PolicyRegistry:
    """Live versions, their loaded models and canary rollbacks."""

    engine: AsyncEngine | None
    default_uri: str
    metrics: RouterMetrics
    control: control_grpc.ControlServiceAsyncStub | None = None
    loader: Callable[[str], model.TierModel] = model.load
    rows: tuple[VersionRow, ...] = ()
    attempts: list[RollbackAttempt] = field(default_factory=list)
    _models: dict[str, model.TierModel | str] = field(default_factory=dict)
    _retired: set[str] = field(default_factory=set)

    async def refresh(self) -> None:
        """Re-read the table and load artifacts not loaded yet."""
        if self.default_uri and self.default_uri not in self._models:
            await self._load(self.default_uri, self.default_uri)
        if self.engine is None:
            return
        async with db.global_transaction(self.engine) as connection:
            result = await connection.execute(_ROWS)
            rows = tuple(
                VersionRow(
                    r.version, r.artifact_uri, r.status, r.canary_percent, tuple(r.canary_tenants)
                )
                for r in result
            )
        for row in rows:
            if row.version not in self._models:
                await self._load(row.version, row.artifact_uri)
        # A version the table no longer serves may come back later: forget the local retirement.
        self._retired &= {row.version for row in rows}
        self.rows = rows

    async def _load(self, key: str, uri: str) -> None:
        try:
            self._models[key] = await asyncio.to_thread(self.loader, uri)
            _log.info("policy artifact loaded", extra={"version": key, "uri": uri})
        except Exception as error:  # noqa: BLE001 - a bad artifact means rules, not a crash
            self._models[key] = f"{type(error).__name__}: {error}"
            _log.error(
                "policy artifact failed to load",
                extra={"version": key, "uri": uri, "error": str(error)},
            )

    def _resolve(self, version: str) -> tuple[model.TierModel | None, str]:
        loaded = self._models.get(version)
        if isinstance(loaded, model.TierModel):
            return loaded, ""
        if loaded is None:
            return None, f"model of policy {version} not loaded yet"
        return None, f"model of policy {version} failed to load ({loaded})"

    def stable(self) -> Selection:
        """The STABLE version, else the default artifact, else nothing."""
        row = next((r for r in self.rows if r.status == "STABLE"), None)
        if row is not None:
            found, problem = self._resolve(row.version)
            return Selection(row.version, found, problem)
        if self.default_uri:
            found, problem = self._resolve(self.default_uri)
            return Selection(found.version if found else "default", found, problem)
        return Selection("", None, "no policy version registered and no default artifact")

    def canary_for(self, tenant: str) -> VersionRow | None:
        """The CANARY that applies to a tenant: one naming it first, then one for everybody."""
        live = [
            row
            for row in self.rows
            if row.status == "CANARY"
            and row.version not in self._retired
            and row.canary_percent > 0
        ]
        named = next((row for row in live if tenant in row.canary_tenants), None)
        return named or next((row for row in live if not row.canary_tenants), None)

    def select(self, tenant: str, decision_id: str) -> Selection:
        """The version that decides this request (see the module docstring)."""
        base = self.stable()
        row = self.canary_for(tenant)
        if row is None:
            return base
        if not canary.in_canary(decision_id, row.canary_percent):
            return Selection(base.version, base.model, base.problem, "stable", row.version)
        found, problem = self._resolve(row.version)
        return Selection(row.version, found, problem, "canary", row.version)

    def is_live_canary(self, version: str) -> bool:
        """Whether a version is still served as a canary by this replica."""
        return version not in self._retired and any(
            r.version == version and r.status == "CANARY" for r in self.rows
        )

    async def rollback(self, version: str, tenant: str, verdict: str) -> RollbackAttempt:
        """Retire a canary: stop serving it here and ask the control plane to record it."""
        reason = f"canary {version} rolled back automatically for tenant {tenant}: {verdict}"
        reason = reason[:MAX_REASON_CHARS]
        self._retired.add(version)
        self.metrics.rollbacks.labels(version).inc()
        _log.warning(
            "canary rolled back", extra={"version": version, "tenant": tenant, "reason": reason}
        )
        attempt = RollbackAttempt(
            version, tenant, reason, called=False, ok=False, error="no control target"
        )
        if self.control is not None:
            request = control_pb.UpdatePolicyVersionRequest(
                policy_version=resources_pb2.PolicyVersion(
                    name=f"policyVersions/{version}",
                    status=resources_pb2.POLICY_VERSION_STATUS_RETIRED,
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["status"]),
                request_id=f"router-rollback-{version}",
                reason=reason,
            )
            try:
                await self.control.UpdatePolicyVersion(
                    request, timeout=5, metadata=((context.PLATFORM_ADMIN_KEY, "1"),)
                )
                attempt = RollbackAttempt(version, tenant, reason, called=True, ok=True)
            except Exception as error:  # noqa: BLE001 - the local retirement stands regardless
                attempt = RollbackAttempt(
                    version, tenant, reason, called=True, ok=False, error=str(error)[:200]
                )
                _log.error(
                    "control plane did not record the rollback",
                    extra={"version": version, "error": attempt.error},
                )
        self.attempts.append(attempt)
        return attempt

    async def run(self, interval_s: float) -> None:
        """Refresh every ``interval_s`` until cancelled."""
        while True:
            try:
                # Bounded, so a hung database delays the view, never the refresh loop.
                async with asyncio.timeout(max(interval_s, 5.0)):
                    await self.refresh()
            except Exception:  # noqa: BLE001 - keep the last view and try again
                self.metrics.state_errors.labels("registry_refresh").inc()
                _log.warning("policy registry refresh failed", exc_info=True)
            await asyncio.sleep(interval_s)
