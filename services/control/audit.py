"""The audit log: one row per applied change, written in the change's own transaction.

Actor, action and request id come from the call context; ``metadata`` says what changed
and never carries secrets. The request's idempotency key is kept in the metadata too, so a
retried mutation is recognised and answered without being applied (or audited) twice.
Platform-wide resources have no tenant to file a row under; their changes go to
``app.platform_audit_logs`` (append-only for the services), also in the change's transaction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime

from google.protobuf import timestamp_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.control import access, names, paging, store
from services.kit import db, tenancy
from supportmesh.control.v1 import control_service_pb2 as pb
from supportmesh.control.v1 import resources_pb2 as res

_log = logging.getLogger("supportmesh.audit")
IDEMPOTENCY_KEY = "idempotency_key"
_KIND = "auditLogs"

_INSERT = text(
    "INSERT INTO app.audit_logs (tenant_id, actor, action, resource, request_id, metadata) "
    "VALUES (:tenant, :actor, :action, :resource, :request_id, CAST(:metadata AS jsonb))"
)
_REPLAYED = text(
    "SELECT 1 FROM app.audit_logs WHERE action = :action AND resource = :resource "
    "AND metadata ->> 'idempotency_key' = :key LIMIT 1"
)
_LIST = text(
    """
    SELECT log_id::text AS log_id, actor, action, resource, request_id, status_code,
           metadata::text AS metadata, created_at
    FROM app.audit_logs
    WHERE (CAST(:start AS timestamptz) IS NULL OR created_at >= CAST(:start AS timestamptz))
      AND (CAST(:end AS timestamptz) IS NULL OR created_at < CAST(:end AS timestamptz))
      AND (CAST(:actor AS text) = '' OR actor = CAST(:actor AS text))
      AND (CAST(:action AS text) = '' OR action = CAST(:action AS text))
      AND (CAST(:after_ts AS timestamptz) IS NULL
           OR (created_at, log_id) < (CAST(:after_ts AS timestamptz), CAST(:after_id AS uuid)))
    ORDER BY created_at DESC, log_id DESC
    LIMIT :limit
    """
)


def actor() -> str:
    """Who is acting: the credential's subject, else the operator or the bare tenant."""
    call = tenancy.caller()
    if call.subject:
        return call.subject
    if call.platform_admin:
        return "platform:admin"
    return f"tenants/{call.tenant_id}" if call.tenant_id else "unknown"


def action() -> str:
    """The full method name of the current call, e.g. ``pkg.Service/Method``."""
    return tenancy.caller().method.lstrip("/")


async def record(
    connection: AsyncConnection,
    tenant_id: str,
    resource: str,
    metadata: Mapping[str, str] | None = None,
    idempotency_key: str = "",
) -> None:
    """Write one audit row for the current call's change to ``resource``."""
    detail = dict(metadata or {})
    if idempotency_key:
        detail[IDEMPOTENCY_KEY] = idempotency_key
    await connection.execute(
        _INSERT,
        {
            "tenant": tenant_id,
            "actor": actor(),
            "action": action(),
            "resource": resource,
            "request_id": tenancy.caller().request_id,
            "metadata": json.dumps(detail, sort_keys=True),
        },
    )


async def replayed(connection: AsyncConnection, resource: str, idempotency_key: str) -> bool:
    """Whether this call's change to ``resource`` was already applied under the same key."""
    if not idempotency_key:
        return False
    found = await connection.scalar(
        _REPLAYED, {"action": action(), "resource": resource, "key": idempotency_key}
    )
    return found is not None


_INSERT_PLATFORM = text(
    "INSERT INTO app.platform_audit_logs (actor, action, resource, request_id, metadata) "
    "VALUES (:actor, :action, :resource, :request_id, CAST(:metadata AS jsonb))"
)


async def record_platform(
    connection: AsyncConnection, resource: str, metadata: Mapping[str, str]
) -> None:
    """Write one platform audit row for the current call's change to ``resource``."""
    call = tenancy.caller()
    await connection.execute(
        _INSERT_PLATFORM,
        {
            "actor": actor(),
            "action": action(),
            "resource": resource,
            "request_id": call.request_id,
            "metadata": json.dumps(dict(metadata), sort_keys=True),
        },
    )
    _log.info("audit", extra={"resource": resource, "action": action()})


def _full_action(wanted: str) -> str:
    # A bare method name ("RevokeApiKey") means this service's method of that name.
    if not wanted or "/" in wanted:
        return wanted
    return f"{action().rpartition('/')[0]}/{wanted}"


def _optional_time(stamp: timestamp_pb2.Timestamp, present: bool) -> datetime | None:
    return store.from_timestamp(stamp) if present else None


async def list_logs(
    connection: AsyncConnection, tenant_id: str, request: pb.ListAuditLogsRequest
) -> tuple[list[res.AuditLog], str]:
    """One page of a tenant's audit log, newest first."""
    size = paging.page_size(request.page_size)
    after = paging.decode(request.page_token, _KIND, 2)
    result = await connection.execute(
        _LIST,
        {
            "start": _optional_time(request.start_time, request.HasField("start_time")),
            "end": _optional_time(request.end_time, request.HasField("end_time")),
            "actor": request.actor,
            "action": _full_action(request.action),
            "after_ts": paging.decode_time(after[0]) if after else None,
            "after_id": paging.decode_uuid(after[1]) if after else None,
            "limit": size + 1,
        },
    )
    rows = result.all()
    page, token = paging.split(
        rows, size, _KIND, lambda row: (row.created_at.isoformat(), str(row.log_id))
    )
    logs = [
        res.AuditLog(
            name=names.child(tenant_id, names.AUDIT_LOGS, str(row.log_id)),
            actor=str(row.actor),
            action=str(row.action),
            resource=str(row.resource),
            create_time=store.timestamp(row.created_at),
            request_id=str(row.request_id),
            status_code=int(row.status_code),
            metadata={str(k): str(v) for k, v in json.loads(row.metadata).items()},
        )
        for row in page
    ]
    return logs, token


class AuditLogs:
    """Read access to tenants' audit logs."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Read audit rows from ``engine``'s database."""
        self._engine = engine

    async def list(self, request: pb.ListAuditLogsRequest) -> tuple[list[res.AuditLog], str]:
        """One page of a tenant's audit log, newest first."""
        tenant_id = access.tenant(request.parent, write=False, field="parent")
        async with db.tenant_transaction(self._engine, tenant_id) as connection:
            await store.require_tenant_row(connection, tenant_id, "parent")
            return await list_logs(connection, tenant_id, request)
