"""Shared persistence helpers: operator transactions, existence checks, etags, masks, times."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from google.protobuf import field_mask_pb2, timestamp_pb2
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.control import names
from services.kit import db, errors

_SET_TENANT = text("SELECT set_config('app.tenant_id', :tenant, true)")
_TENANT_EXISTS = text("SELECT 1 FROM app.tenants WHERE tenant_id = :tenant")


@asynccontextmanager
async def operator_transaction(
    engine: AsyncEngine, tenant_id: str
) -> AsyncIterator[AsyncConnection]:
    """A platform transaction also bound to ``tenant_id``, so its audit row can be written."""
    async with db.platform_transaction(engine) as connection:
        await connection.execute(_SET_TENANT, {"tenant": tenant_id})
        yield connection


async def require_tenant_row(connection: AsyncConnection, tenant_id: str, field: str) -> None:
    """NOT_FOUND unless the tenant exists (the operator may name any tenant)."""
    found = await connection.scalar(_TENANT_EXISTS, {"tenant": tenant_id})
    if found is None:
        raise errors.NotFound(f"{names.tenant(tenant_id)} not found", field=field)


def etag(version: int) -> str:
    """The etag of a row at ``version``."""
    return f'W/"{version}"'


def check_etag(given: str, version: int, field: str) -> None:
    """ABORTED (CONFLICT) when a non-empty etag is not the current one."""
    if given and given != etag(version):
        raise errors.Aborted(
            "the resource changed since it was read; read it again and retry", field=field
        )


def mask_paths(
    mask: field_mask_pb2.FieldMask, allowed: Iterable[str], field: str = "update_mask"
) -> list[str]:
    """The paths of a required update mask, each one of ``allowed``."""
    known = set(allowed)
    paths = list(dict.fromkeys(mask.paths))
    if not paths:
        raise errors.InvalidArgument(f"{field} must name at least one field", field=field)
    unknown = [path for path in paths if path not in known]
    if unknown:
        raise errors.InvalidArgument(
            f"{field} names fields that cannot be changed: {unknown}; allowed: {sorted(known)}",
            field=field,
        )
    return paths


def timestamp(moment: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A protobuf Timestamp for a database time (None stays None)."""
    if moment is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def from_timestamp(stamp: timestamp_pb2.Timestamp) -> datetime:
    """An aware UTC datetime for a protobuf Timestamp."""
    return stamp.ToDatetime(tzinfo=UTC)


def require(value: str, field: str) -> str:
    """INVALID_ARGUMENT when a required string field is empty."""
    if not value.strip():
        raise errors.InvalidArgument(f"{field} is required", field=field)
    return value
