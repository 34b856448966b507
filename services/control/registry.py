"""A versioned registry of protobuf specs per tenant, shared by the tool and agent registries.

Each version is stored as proto JSON. Registering an existing version again with the same
spec is a no-op; with a different spec it fails with ALREADY_EXISTS, so a published
version never changes under the workflows that run it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from google.protobuf import json_format
from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.control import names, specs
from services.kit import errors
from supportmesh.control.v1 import resources_pb2 as res
from supportmesh.spec.v1 import tool_pb2

M = TypeVar("M", tool_pb2.ToolSpec, res.AgentManifest)


@dataclass(frozen=True)
class Entry(Generic[M]):
    """One registered name: the chosen version's spec and every version, lowest first."""

    name: str
    spec: M
    versions: list[str]
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True)
class _Statements:
    """The SQL of one registry table."""

    version: TextClause
    insert: TextClause
    all_versions: TextClause
    page_names: TextClause
    versions_of_names: TextClause


def _statements(table: str, column: str) -> _Statements:
    # ``table`` and ``column`` come from the two fixed registries below, never from input.
    select = f"SELECT name, version, {column}::text AS spec, created_at FROM app.{table}"  # noqa: S608
    return _Statements(
        version=text(f"{select} WHERE name = :name AND version = :version"),
        insert=text(
            f"INSERT INTO app.{table} (tenant_id, name, version, {column}) "  # noqa: S608
            "VALUES (:tenant, :name, :version, CAST(:spec AS jsonb)) "
            "ON CONFLICT (tenant_id, name, version) DO NOTHING RETURNING name"
        ),
        all_versions=text(f"{select} WHERE name = :name"),
        page_names=text(
            f"SELECT DISTINCT name FROM app.{table} WHERE name > :after "  # noqa: S608
            "ORDER BY name LIMIT :limit"
        ),
        versions_of_names=text(f"{select} WHERE name = ANY(:names)"),
    )


class Registry(Generic[M]):
    """Versioned specs of one kind, inside the caller's tenant transaction."""

    def __init__(self, table: str, column: str, collection: str, message: type[M]) -> None:
        """A registry over ``app.{table}``, its spec in ``column``, named ``collection``."""
        self._sql = _statements(table, column)
        self._collection = collection
        self._message: type[M] = message

    def _parse(self, raw: str) -> M:
        message = self._message()
        json_format.Parse(raw, message, ignore_unknown_fields=True)
        return message

    async def register(
        self, connection: AsyncConnection, tenant_id: str, spec: M, field: str
    ) -> tuple[Entry[M], bool]:
        """Store ``spec`` as a new version; returns the entry and whether anything changed."""
        key = {"name": spec.name, "version": spec.version}
        changed = False
        if not await self._same_as_stored(connection, spec, field):
            params = {
                **key,
                "tenant": tenant_id,
                "spec": json_format.MessageToJson(spec, indent=None),
            }
            changed = (await connection.execute(self._sql.insert, params)).first() is not None
            if not changed and not await self._same_as_stored(connection, spec, field):
                raise errors.Aborted("a concurrent registration won; retry", field=field)
        return await self.get(connection, tenant_id, spec.name, spec.version), changed

    async def _same_as_stored(self, connection: AsyncConnection, spec: M, field: str) -> bool:
        key = {"name": spec.name, "version": spec.version}
        row = (await connection.execute(self._sql.version, key)).first()
        if row is None:
            return False
        if self._parse(row.spec) != spec:
            raise errors.AlreadyExists(
                f"{spec.name} {spec.version} is registered with a different definition",
                field=f"{field}.version",
            )
        return True

    async def get(
        self, connection: AsyncConnection, tenant_id: str, name: str, version: str = ""
    ) -> Entry[M]:
        """A name with the requested version's spec, or the latest version's."""
        rows = (await connection.execute(self._sql.all_versions, {"name": name})).all()
        if not rows:
            raise errors.NotFound(
                f"{names.child(tenant_id, self._collection, name)} not found", field="name"
            )
        entry = self._entry(rows, version)
        if entry is None:
            raise errors.NotFound(f"version {version} of {name} not found", field="version")
        return entry

    async def names_with_versions(
        self, connection: AsyncConnection, wanted: Sequence[str]
    ) -> set[str]:
        """Which of ``wanted`` are registered."""
        rows = (
            await connection.execute(self._sql.versions_of_names, {"names": list(wanted)})
        ).all()
        return {str(row.name) for row in rows}

    async def page(self, connection: AsyncConnection, after: str, limit: int) -> list[Entry[M]]:
        """Up to ``limit`` names after ``after``, each with its latest version."""
        found = await connection.execute(self._sql.page_names, {"after": after, "limit": limit})
        page = [str(name) for name in found.scalars().all()]
        rows = (await connection.execute(self._sql.versions_of_names, {"names": page})).all()
        grouped: dict[str, list[Any]] = {name: [] for name in page}
        for row in rows:
            grouped[str(row.name)].append(row)
        entries = [self._entry(grouped[name], "") for name in page]
        return [entry for entry in entries if entry is not None]

    def _entry(self, rows: Sequence[Any], version: str) -> Entry[M] | None:
        ordered = sorted(rows, key=lambda row: specs.semver_key(str(row.version)))
        chosen = (
            ordered[-1]
            if not version
            else next((row for row in ordered if row.version == version), None)
        )
        if chosen is None:
            return None
        return Entry(
            name=str(chosen.name),
            spec=self._parse(chosen.spec),
            versions=[str(row.version) for row in ordered],
            create_time=min(row.created_at for row in ordered),
            update_time=max(row.created_at for row in ordered),
        )


def tools() -> Registry[tool_pb2.ToolSpec]:
    """The tool registry (``app.tools``)."""
    return Registry("tools", "spec", names.TOOLS, tool_pb2.ToolSpec)


def agents() -> Registry[res.AgentManifest]:
    """The agent registry (``app.agents``)."""
    return Registry("agents", "manifest", names.AGENTS, res.AgentManifest)
