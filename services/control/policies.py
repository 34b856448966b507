"""Router policy versions: platform-wide, registered as canaries and promoted to stable.

Exactly one version is STABLE once any exists: only the first may register as STABLE,
promoting another retires the current one, and a STABLE version cannot be demoted
directly (roll back by promoting the previous version). Changes are serialised with a
transaction-scoped advisory lock so two promotions cannot both win.

A CANARY decides 5–10 % of its tenants' traffic: the percentage is checked on the version
as it would be stored, so neither registering nor updating (the share, or the status of a
version whose share is out of range) can leave a canary outside that range. Other statuses
serve no canary traffic and keep whatever share (0–100) they had. An update's ``reason``
(an automatic rollback's figures) is kept in its audit entry.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.control import access, audit, names, paging, store
from services.kit import db, errors
from supportmesh.control.v1 import control_service_pb2 as pb
from supportmesh.control.v1 import resources_pb2 as res

_KIND = "policyVersions"
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_URI = re.compile(r"^[a-z][a-z0-9+.-]*://\S{1,2000}$")
_MUTABLE = ("status", "canary_percent", "canary_tenants", "metrics")
# The share of its tenants' traffic a CANARY may decide (the router issue's 5–10 %).
CANARY_PERCENT_MIN = 5
CANARY_PERCENT_MAX = 10
# The longest UpdatePolicyVersion reason kept in an audit entry.
MAX_REASON_CHARS = 1000
_STATUSES = {
    res.POLICY_VERSION_STATUS_STABLE: "STABLE",
    res.POLICY_VERSION_STATUS_CANARY: "CANARY",
    res.POLICY_VERSION_STATUS_RETIRED: "RETIRED",
}
_LOCK_TABLE = text("SELECT pg_advisory_xact_lock(hashtext('app.policy_versions'))")
_GET = text(
    "SELECT version, artifact_uri, metrics::text AS metrics, status, canary_percent, "
    "canary_tenants, created_at, updated_at FROM app.policy_versions WHERE version = :version"
)
_ANY = text("SELECT 1 FROM app.policy_versions LIMIT 1")
_INSERT = text(
    """
    INSERT INTO app.policy_versions (version, artifact_uri, metrics, status, canary_percent,
                                     canary_tenants)
    VALUES (:version, :artifact_uri, CAST(:metrics AS jsonb), :status, :canary_percent,
            :canary_tenants)
    RETURNING version, artifact_uri, metrics::text AS metrics, status, canary_percent,
              canary_tenants, created_at, updated_at
    """
)
_RETIRE_STABLE = text(
    "UPDATE app.policy_versions SET status = 'RETIRED', updated_at = now() WHERE status = 'STABLE'"
)
_UPDATE = text(
    """
    UPDATE app.policy_versions
    SET status = :status, canary_percent = :canary_percent, canary_tenants = :canary_tenants,
        metrics = CAST(:metrics AS jsonb), updated_at = now()
    WHERE version = :version
    RETURNING version, artifact_uri, metrics::text AS metrics, status, canary_percent,
              canary_tenants, created_at, updated_at
    """
)
_LIST = text(
    """
    SELECT version, artifact_uri, metrics::text AS metrics, status, canary_percent,
           canary_tenants, created_at, updated_at
    FROM app.policy_versions
    WHERE (CAST(:status AS text) = '' OR status = CAST(:status AS text))
      AND (CAST(:after_ts AS timestamptz) IS NULL
           OR (created_at, version) < (CAST(:after_ts AS timestamptz), CAST(:after_v AS text)))
    ORDER BY created_at DESC, version DESC
    LIMIT :limit
    """
)


def _policy(row: Any) -> res.PolicyVersion:
    return res.PolicyVersion(
        name=names.policy_version(str(row.version)),
        version=str(row.version),
        artifact_uri=str(row.artifact_uri),
        metrics={str(k): float(v) for k, v in json.loads(row.metrics).items()},
        status=res.PolicyVersionStatus.Value(f"POLICY_VERSION_STATUS_{row.status}"),
        canary_percent=int(row.canary_percent),
        canary_tenants=list(row.canary_tenants),
        create_time=store.timestamp(row.created_at),
        update_time=store.timestamp(row.updated_at),
    )


def _for_viewer(policy: res.PolicyVersion, viewer: str) -> res.PolicyVersion:
    """A tenant sees its own id among the canary tenants, never another tenant's."""
    if not viewer:
        return policy
    listed = viewer in policy.canary_tenants
    applies = listed or not policy.canary_tenants
    del policy.canary_tenants[:]
    if listed:
        policy.canary_tenants.append(viewer)
    if not applies:
        policy.canary_percent = 0  # the canary decides none of this tenant's traffic
    return policy


def _status(value: res.PolicyVersionStatus.ValueType) -> str:
    if value not in _STATUSES:
        raise errors.InvalidArgument(
            "policy_version.status must be STABLE, CANARY or RETIRED", field="policy_version.status"
        )
    return _STATUSES[value]


def _percent(value: int, status: str) -> int:
    low, high = (CANARY_PERCENT_MIN, CANARY_PERCENT_MAX) if status == "CANARY" else (0, 100)
    if not low <= value <= high:
        condition = "of a CANARY " if status == "CANARY" else ""
        raise errors.InvalidArgument(
            f"policy_version.canary_percent {condition}must be between {low} and {high}, "
            f"got {value}",
            field="policy_version.canary_percent",
        )
    return value


def _reason(value: str) -> str:
    if len(value) > MAX_REASON_CHARS:
        raise errors.InvalidArgument(
            f"reason must be at most {MAX_REASON_CHARS} characters", field="reason"
        )
    return value


def _tenants(values: list[str]) -> list[str]:
    for tenant_id in values:
        if not names.TENANT_ID.match(tenant_id):
            raise errors.InvalidArgument(
                f"policy_version.canary_tenants holds {tenant_id!r}, which is not a tenant id",
                field="policy_version.canary_tenants",
            )
    return sorted(set(values))


def _metrics(values: Mapping[str, float]) -> str:
    if any(not key or not math.isfinite(value) for key, value in values.items()):
        raise errors.InvalidArgument(
            "policy_version.metrics must map names to finite numbers",
            field="policy_version.metrics",
        )
    return json.dumps(dict(values), sort_keys=True)


class PolicyVersions:
    """The platform's router policy versions and their rollout."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Keep versions in ``engine``'s database."""
        self._engine = engine

    async def register(self, request: pb.RegisterPolicyVersionRequest) -> res.PolicyVersion:
        """Record a version; a retry with the same artifact returns it as stored."""
        access.platform_write()
        store.require(request.request_id, "request_id")
        wanted = request.policy_version
        if not _VERSION.match(wanted.version):
            raise errors.InvalidArgument(
                "policy_version.version must be 1–63 characters of [A-Za-z0-9._-]",
                field="policy_version.version",
            )
        if not _URI.match(wanted.artifact_uri):
            raise errors.InvalidArgument(
                "policy_version.artifact_uri must be a URI such as file:///models/router/v1",
                field="policy_version.artifact_uri",
            )
        status = _status(wanted.status)
        params = {
            "version": wanted.version,
            "artifact_uri": wanted.artifact_uri,
            "metrics": _metrics(wanted.metrics),
            "status": status,
            "canary_percent": _percent(wanted.canary_percent, status),
            "canary_tenants": _tenants(list(wanted.canary_tenants)),
        }
        async with db.global_transaction(self._engine) as connection:
            await connection.execute(_LOCK_TABLE)
            existing = (await connection.execute(_GET, {"version": wanted.version})).first()
            if existing is not None:
                if existing.artifact_uri != wanted.artifact_uri:
                    raise errors.AlreadyExists(
                        f"policy version {wanted.version} exists with another artifact",
                        field="policy_version.version",
                    )
                return _policy(existing)
            if params["status"] == "STABLE" and await connection.scalar(_ANY) is not None:
                raise errors.FailedPrecondition(
                    "only the first version may register as STABLE; "
                    "register a CANARY and promote it",
                    field="policy_version.status",
                )
            created = _policy((await connection.execute(_INSERT, params)).one())
            await audit.record_platform(
                connection,
                created.name,
                {"status": str(params["status"]), "artifact_uri": wanted.artifact_uri},
            )
        return created

    async def list(
        self, request: pb.ListPolicyVersionsRequest
    ) -> tuple[list[res.PolicyVersion], str]:
        """One page of versions, newest first."""
        access.platform_read()
        size = paging.page_size(request.page_size)
        after = paging.decode(request.page_token, _KIND, 2)
        status = (
            ""
            if request.status == res.POLICY_VERSION_STATUS_UNSPECIFIED
            else _status(request.status)
        )
        params = {
            "status": status,
            "after_ts": paging.decode_time(after[0]) if after else None,
            "after_v": after[1] if after else None,
            "limit": size + 1,
        }
        async with db.global_transaction(self._engine) as connection:
            rows = (await connection.execute(_LIST, params)).all()
        page, token = paging.split(
            rows, size, _KIND, lambda row: (row.created_at.isoformat(), str(row.version))
        )
        viewer = "" if access.is_platform_admin() else access.own_tenant()
        return [_for_viewer(_policy(row), viewer) for row in page], token

    async def update(self, request: pb.UpdatePolicyVersionRequest) -> res.PolicyVersion:
        """Move a version through its rollout: promote, change the canary, roll back."""
        access.platform_write()
        wanted = request.policy_version
        version = names.parse_policy_version(wanted.name, "policy_version.name")
        paths = store.mask_paths(request.update_mask, _MUTABLE)
        reason = _reason(request.reason)
        async with db.global_transaction(self._engine) as connection:
            await connection.execute(_LOCK_TABLE)
            row = (await connection.execute(_GET, {"version": version})).first()
            if row is None:
                raise errors.NotFound(f"{wanted.name} not found", field="policy_version.name")
            current = _policy(row)
            source = {path: wanted if path in paths else current for path in _MUTABLE}
            status = _status(source["status"].status)
            params = {
                "version": version,
                "status": status,
                "canary_percent": _percent(source["canary_percent"].canary_percent, status),
                "canary_tenants": _tenants(list(source["canary_tenants"].canary_tenants)),
                "metrics": _metrics(source["metrics"].metrics),
            }
            await self._check_transition(connection, str(row.status), str(params["status"]))
            updated = _policy((await connection.execute(_UPDATE, params)).one())
            changes = {"update_mask": ",".join(paths), "status": status}
            if reason:
                changes["reason"] = reason
            await audit.record_platform(connection, updated.name, changes)
        return updated

    async def _check_transition(self, connection: AsyncConnection, old: str, new: str) -> None:
        if old == "STABLE" and new != "STABLE":
            raise errors.FailedPrecondition(
                "the stable version cannot be demoted; promote another version instead",
                field="policy_version.status",
            )
        if new == "STABLE" and old != "STABLE":
            await connection.execute(_RETIRE_STABLE)
