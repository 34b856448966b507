"""API keys: minted here, stored as a hash, shown once, listed without secrets, revoked."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.control import access, audit, names, paging, scopes, store, users
from services.kit import apikeys, db, errors
from supportmesh.control.v1 import control_service_pb2 as pb
from supportmesh.control.v1 import resources_pb2 as res

_KIND = "apiKeys"
_MAX_LABEL = 200
_MAX_REASON = 1000

_BY_REQUEST = text(
    """
    SELECT key_id, tenant_id, display_name, prefix, scopes, user_id::text AS user_id,
           requests_per_minute, created_at, expires_at, revoked_at, last_used_at,
           CASE WHEN revoked_at IS NOT NULL THEN 'REVOKED'
                WHEN expires_at <= now() THEN 'EXPIRED' ELSE 'ACTIVE' END AS state
    FROM app.api_keys WHERE request_id = :request_id
    """
)
_INSERT = text(
    """
    INSERT INTO app.api_keys (key_id, tenant_id, display_name, prefix, secret_hash, scopes,
                              user_id, requests_per_minute, request_id, expires_at)
    VALUES (:key_id, :tenant, :display_name, :prefix, :secret_hash, :scopes,
            CAST(:user_id AS uuid), :rpm, :request_id, :expires_at)
    ON CONFLICT (tenant_id, request_id) DO NOTHING
    RETURNING key_id, tenant_id, display_name, prefix, scopes, user_id::text AS user_id,
              requests_per_minute, created_at, expires_at, revoked_at, last_used_at,
              'ACTIVE' AS state
    """
)
_LIST = text(
    """
    SELECT key_id, tenant_id, display_name, prefix, scopes, user_id::text AS user_id,
           requests_per_minute, created_at, expires_at, revoked_at, last_used_at,
           CASE WHEN revoked_at IS NOT NULL THEN 'REVOKED'
                WHEN expires_at <= now() THEN 'EXPIRED' ELSE 'ACTIVE' END AS state
    FROM app.api_keys
    WHERE (:show_inactive OR (revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())))
      AND (CAST(:after_ts AS timestamptz) IS NULL
           OR (created_at, key_id) < (CAST(:after_ts AS timestamptz), CAST(:after_id AS text)))
    ORDER BY created_at DESC, key_id DESC
    LIMIT :limit
    """
)
_LOCK = text(
    """
    SELECT key_id, tenant_id, display_name, prefix, scopes, user_id::text AS user_id,
           requests_per_minute, created_at, expires_at, revoked_at, last_used_at,
           CASE WHEN revoked_at IS NOT NULL THEN 'REVOKED'
                WHEN expires_at <= now() THEN 'EXPIRED' ELSE 'ACTIVE' END AS state
    FROM app.api_keys WHERE key_id = :key_id FOR UPDATE
    """
)
_REVOKE = text(
    """
    UPDATE app.api_keys SET revoked_at = now() WHERE key_id = :key_id
    RETURNING key_id, tenant_id, display_name, prefix, scopes, user_id::text AS user_id,
              requests_per_minute, created_at, expires_at, revoked_at, last_used_at,
              'REVOKED' AS state
    """
)


def _key(row: Any) -> res.ApiKey:
    tenant_id = str(row.tenant_id)
    return res.ApiKey(
        name=names.child(tenant_id, names.API_KEYS, str(row.key_id)),
        display_name=str(row.display_name),
        prefix=str(row.prefix),
        scopes=list(row.scopes),
        user=names.child(tenant_id, names.USERS, row.user_id) if row.user_id else "",
        requests_per_minute=int(row.requests_per_minute),
        state=res.ApiKeyState.Value(f"API_KEY_STATE_{row.state}"),
        create_time=store.timestamp(row.created_at),
        expire_time=store.timestamp(row.expires_at),
        revoke_time=store.timestamp(row.revoked_at),
        last_use_time=store.timestamp(row.last_used_at),
    )


def _user_id(tenant_id: str, user: str) -> str | None:
    if not user:
        return None
    owner, raw_id = names.parse_child(user, names.USERS, "api_key.user")
    user_id = users.parse_user_id(raw_id)
    if owner != tenant_id or user_id is None:
        raise errors.InvalidArgument(
            "api_key.user must be a user of this tenant", field="api_key.user"
        )
    return user_id


def _expiry(key: res.ApiKey) -> datetime | None:
    if not key.HasField("expire_time"):
        return None
    expires = store.from_timestamp(key.expire_time)
    if expires <= datetime.now(UTC):
        raise errors.InvalidArgument(
            "api_key.expire_time must be in the future", field="api_key.expire_time"
        )
    return expires


class ApiKeys:
    """The API key repository and its rules."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Keep API keys in ``engine``'s database."""
        self._engine = engine

    async def create(self, request: pb.CreateApiKeyRequest) -> tuple[res.ApiKey, str]:
        """Create a key and return it with its secret; a retry returns it without the secret."""
        tenant_id = access.tenant(request.parent, write=True, field="parent")
        store.require(request.request_id, "request_id")
        wanted = request.api_key
        granted = scopes.validate(wanted.scopes, "api_key.scopes")
        if wanted.requests_per_minute < 0:
            raise errors.InvalidArgument(
                "api_key.requests_per_minute must not be negative",
                field="api_key.requests_per_minute",
            )
        if len(wanted.display_name) > _MAX_LABEL:
            raise errors.InvalidArgument(
                f"api_key.display_name is longer than {_MAX_LABEL} characters",
                field="api_key.display_name",
            )
        expires = _expiry(wanted)
        user_id = _user_id(tenant_id, wanted.user)
        async with db.tenant_transaction(self._engine, tenant_id) as connection:
            await store.require_tenant_row(connection, tenant_id, "parent")
            if (key := await self._replay(connection, request.request_id)) is not None:
                return key, ""
            if user_id is not None and not await users.exists(connection, user_id):
                raise errors.NotFound(f"{wanted.user} not found", field="api_key.user")
            minted = apikeys.mint()
            row = (
                await connection.execute(
                    _INSERT,
                    {
                        "key_id": minted.key_id,
                        "tenant": tenant_id,
                        "display_name": wanted.display_name,
                        "prefix": minted.display_prefix,
                        "secret_hash": minted.secret_hash,
                        "scopes": granted,
                        "user_id": user_id,
                        "rpm": wanted.requests_per_minute,
                        "request_id": request.request_id,
                        "expires_at": expires,
                    },
                )
            ).first()
            if row is None:
                if (key := await self._replay(connection, request.request_id)) is not None:
                    return key, ""
                raise errors.Aborted("a concurrent request won; retry", field="request_id")
            key = _key(row)
            metadata = {"scopes": " ".join(granted), "prefix": key.prefix}
            if key.user:
                metadata["user"] = key.user
            await audit.record(connection, tenant_id, key.name, metadata, request.request_id)
            return key, minted.secret

    async def _replay(self, connection: AsyncConnection, request_id: str) -> res.ApiKey | None:
        row = (await connection.execute(_BY_REQUEST, {"request_id": request_id})).first()
        return None if row is None else _key(row)

    async def list(self, request: pb.ListApiKeysRequest) -> tuple[list[res.ApiKey], str]:
        """One page of a tenant's keys, newest first, never with secrets or hashes."""
        tenant_id = access.tenant(request.parent, write=False, field="parent")
        size = paging.page_size(request.page_size)
        after = paging.decode(request.page_token, _KIND, 2)
        params = {
            "show_inactive": request.show_inactive,
            "after_ts": paging.decode_time(after[0]) if after else None,
            "after_id": after[1] if after else None,
            "limit": size + 1,
        }
        async with db.tenant_transaction(self._engine, tenant_id) as connection:
            await store.require_tenant_row(connection, tenant_id, "parent")
            rows = (await connection.execute(_LIST, params)).all()
        page, token = paging.split(
            rows, size, _KIND, lambda row: (row.created_at.isoformat(), str(row.key_id))
        )
        return [_key(row) for row in page], token

    async def revoke(self, request: pb.RevokeApiKeyRequest) -> res.ApiKey:
        """Revoke a key; revoking a revoked key returns it unchanged."""
        tenant_id, key_id = access.child(request.name, names.API_KEYS, write=True)
        if len(request.reason) > _MAX_REASON:
            raise errors.InvalidArgument(
                f"reason is longer than {_MAX_REASON} characters", field="reason"
            )
        async with db.tenant_transaction(self._engine, tenant_id) as connection:
            row = (await connection.execute(_LOCK, {"key_id": key_id})).first()
            if row is None:
                raise errors.NotFound(f"{request.name} not found", field="name")
            if row.revoked_at is not None:
                return _key(row)
            revoked = _key((await connection.execute(_REVOKE, {"key_id": key_id})).one())
            await audit.record(
                connection, tenant_id, revoked.name, {"reason": request.reason}, request.request_id
            )
            return revoked
