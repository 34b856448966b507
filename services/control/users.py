"""Users: a tenant's staff, unique by e-mail within the tenant."""

from __future__ import annotations

import re
import uuid
from typing import Any, NoReturn

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.control import access, audit, names, paging, store
from services.kit import db, errors
from supportmesh.control.v1 import control_service_pb2 as pb
from supportmesh.control.v1 import resources_pb2 as res

_KIND = "users"
_EMAIL = re.compile(r"^[^@\s]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+$")
_ROLES = {
    res.USER_ROLE_ADMIN: "ADMIN",
    res.USER_ROLE_AGENT: "AGENT",
    res.USER_ROLE_VIEWER: "VIEWER",
}

_BY_REQUEST = text(
    "SELECT user_id::text AS user_id, tenant_id, email, display_name, role, created_at "
    "FROM app.users WHERE request_id = :request_id"
)
_EMAIL_TAKEN = text("SELECT 1 FROM app.users WHERE email = :email")
_INSERT = text(
    """
    INSERT INTO app.users (user_id, tenant_id, email, display_name, role, request_id)
    VALUES (coalesce(CAST(:user_id AS uuid), gen_random_uuid()), :tenant, :email,
            :display_name, :role, :request_id)
    ON CONFLICT DO NOTHING
    RETURNING user_id::text AS user_id, tenant_id, email, display_name, role, created_at
    """
)
_LIST = text(
    """
    SELECT user_id::text AS user_id, tenant_id, email, display_name, role, created_at
    FROM app.users WHERE email > CAST(:after AS text) ORDER BY email LIMIT :limit
    """
)
_EXISTS = text("SELECT 1 FROM app.users WHERE user_id = CAST(:user_id AS uuid)")
_REVOKE_KEYS = text(
    """
    UPDATE app.api_keys SET revoked_at = coalesce(revoked_at, now()), user_id = NULL
    WHERE user_id = CAST(:user_id AS uuid) RETURNING key_id
    """
)
_DELETE = text("DELETE FROM app.users WHERE user_id = CAST(:user_id AS uuid)")


def _user(row: Any) -> res.User:
    return res.User(
        name=names.child(str(row.tenant_id), names.USERS, str(row.user_id)),
        email=str(row.email),
        display_name=str(row.display_name),
        role=res.UserRole.Value(f"USER_ROLE_{row.role}"),
        create_time=store.timestamp(row.created_at),
    )


def parse_user_id(value: str) -> str | None:
    """The canonical form of a user id, or None when it is not one."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


async def exists(connection: AsyncConnection, user_id: str) -> bool:
    """Whether the user exists in the transaction's tenant."""
    return await connection.scalar(_EXISTS, {"user_id": user_id}) is not None


class Users:
    """The user repository and its rules."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Keep users in ``engine``'s database."""
        self._engine = engine

    async def create(self, request: pb.CreateUserRequest) -> res.User:
        """Add a user; a retry with the same request_id returns the same user."""
        tenant_id = access.tenant(request.parent, write=True, field="parent")
        store.require(request.request_id, "request_id")
        email = request.user.email.strip().lower()
        if not _EMAIL.match(email):
            raise errors.InvalidArgument("user.email is not an e-mail address", field="user.email")
        if request.user.role not in _ROLES:
            raise errors.InvalidArgument(
                "user.role must be ADMIN, AGENT or VIEWER", field="user.role"
            )
        user_id = None
        if request.user_id:
            user_id = parse_user_id(request.user_id)
            if user_id is None:
                raise errors.InvalidArgument("user_id must be a UUID", field="user_id")
        async with db.tenant_transaction(self._engine, tenant_id) as connection:
            await store.require_tenant_row(connection, tenant_id, "parent")
            replay = (
                await connection.execute(_BY_REQUEST, {"request_id": request.request_id})
            ).first()
            if replay is not None:
                return _user(replay)
            row = (
                await connection.execute(
                    _INSERT,
                    {
                        "user_id": user_id,
                        "tenant": tenant_id,
                        "email": email,
                        "display_name": request.user.display_name,
                        "role": _ROLES[request.user.role],
                        "request_id": request.request_id,
                    },
                )
            ).first()
            if row is None:
                await self._conflict(connection, email, request.request_id)
            user = _user(row)
            await audit.record(
                connection,
                tenant_id,
                user.name,
                {"role": _ROLES[request.user.role]},
                request.request_id,
            )
            return user

    async def _conflict(self, connection: AsyncConnection, email: str, request_id: str) -> NoReturn:
        if (await connection.execute(_BY_REQUEST, {"request_id": request_id})).first() is not None:
            raise errors.Aborted(
                "a concurrent retry of this request won; retry it", field="request_id"
            )
        if await connection.scalar(_EMAIL_TAKEN, {"email": email}) is not None:
            raise errors.AlreadyExists("a user with this e-mail already exists", field="user.email")
        raise errors.AlreadyExists("a user with this id already exists", field="user_id")

    async def list(self, request: pb.ListUsersRequest) -> tuple[list[res.User], str]:
        """One page of a tenant's users by e-mail."""
        tenant_id = access.tenant(request.parent, write=False, field="parent")
        size = paging.page_size(request.page_size)
        after = paging.decode(request.page_token, _KIND, 1)
        async with db.tenant_transaction(self._engine, tenant_id) as connection:
            await store.require_tenant_row(connection, tenant_id, "parent")
            rows = (
                await connection.execute(
                    _LIST, {"after": after[0] if after else "", "limit": size + 1}
                )
            ).all()
        page, token = paging.split(rows, size, _KIND, lambda row: (str(row.email),))
        return [_user(row) for row in page], token

    async def delete(self, request: pb.DeleteUserRequest) -> None:
        """Remove a user and revoke the API keys acting for it."""
        tenant_id, raw_id = access.child(request.name, names.USERS, write=True)
        user_id = parse_user_id(raw_id)
        name = names.child(tenant_id, names.USERS, user_id) if user_id else request.name
        async with db.tenant_transaction(self._engine, tenant_id) as connection:
            if await audit.replayed(connection, name, request.request_id):
                return
            if user_id is None or not await exists(connection, user_id):
                raise errors.NotFound(f"{request.name} not found", field="name")
            revoked = (await connection.execute(_REVOKE_KEYS, {"user_id": user_id})).scalars().all()
            await connection.execute(_DELETE, {"user_id": user_id})
            await audit.record(
                connection,
                tenant_id,
                name,
                {"revoked_api_keys": ",".join(sorted(str(key) for key in revoked))},
                request.request_id,
            )
