"""Users and API keys: uniqueness, paging, secrets shown once and stored hashed, revocation."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
from google.protobuf import timestamp_pb2

from services.kit import apikeys
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


def _user(email: str, role: res.UserRole.ValueType = res.USER_ROLE_AGENT) -> res.User:
    return res.User(email=email, display_name=email.split("@")[0], role=role)


async def _create_user(stub: Stub, tenant: str, email: str) -> res.User:
    request = pb.CreateUserRequest(
        parent=f"tenants/{tenant}", user=_user(email), request_id=uuid.uuid4().hex
    )
    return (await stub.CreateUser(request, metadata=admin(tenant).md, timeout=TIMEOUT)).user


async def _create_key(
    stub: Stub, tenant: str, scopes: list[str], **fields: object
) -> pb.CreateApiKeyResponse:
    request = pb.CreateApiKeyRequest(
        parent=f"tenants/{tenant}",
        api_key=res.ApiKey(display_name="widget", scopes=scopes, **fields),  # type: ignore[arg-type]
        request_id=uuid.uuid4().hex,
    )
    return await stub.CreateApiKey(request, metadata=admin(tenant).md, timeout=TIMEOUT)


async def test_users_are_unique_by_email_and_idempotent(stub: Stub, tenant: str) -> None:
    request = pb.CreateUserRequest(
        parent=f"tenants/{tenant}", user=_user("Ana@Example.com"), request_id=uuid.uuid4().hex
    )
    first = (await stub.CreateUser(request, metadata=admin(tenant).md, timeout=TIMEOUT)).user
    assert first.name.startswith(f"tenants/{tenant}/users/")
    assert first.email == "ana@example.com"
    assert first.role == res.USER_ROLE_AGENT
    retry = (await stub.CreateUser(request, metadata=admin(tenant).md, timeout=TIMEOUT)).user
    assert retry == first

    request.request_id = uuid.uuid4().hex
    error = await fails(stub.CreateUser(request, metadata=admin(tenant).md, timeout=TIMEOUT))
    assert error.code == grpc.StatusCode.ALREADY_EXISTS
    assert error.metadata["field"] == "user.email"

    # The same address may exist in another tenant.
    other = (await create_tenant(stub)).name.removeprefix("tenants/")
    assert (await _create_user(stub, other, "ana@example.com")).email == "ana@example.com"


async def test_create_user_validates_input(stub: Stub, tenant: str) -> None:
    cases = {
        "user.email": _user("not-an-email"),
        "user.role": _user("bob@example.com", res.USER_ROLE_UNSPECIFIED),
    }
    for field, user in cases.items():
        request = pb.CreateUserRequest(parent=f"tenants/{tenant}", user=user, request_id="r")
        error = await fails(stub.CreateUser(request, metadata=admin(tenant).md, timeout=TIMEOUT))
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert error.metadata["field"] == field
    request = pb.CreateUserRequest(
        parent=f"tenants/{tenant}", user=_user("c@example.com"), user_id="nope", request_id="r"
    )
    error = await fails(stub.CreateUser(request, metadata=admin(tenant).md, timeout=TIMEOUT))
    assert error.metadata["field"] == "user_id"
    chosen = str(uuid.uuid4())
    request.user_id = chosen
    created = (await stub.CreateUser(request, metadata=admin(tenant).md, timeout=TIMEOUT)).user
    assert created.name == f"tenants/{tenant}/users/{chosen}"


async def test_users_page_by_email(stub: Stub, tenant: str) -> None:
    emails = [f"user{i:02d}@example.com" for i in range(7)]
    for email in reversed(emails):
        await _create_user(stub, tenant, email)
    seen: list[str] = []
    token = ""
    for _ in range(10):
        reply = await stub.ListUsers(
            pb.ListUsersRequest(parent=f"tenants/{tenant}", page_size=3, page_token=token),
            metadata=reader(tenant).md,
            timeout=TIMEOUT,
        )
        seen.extend(user.email for user in reply.users)
        token = reply.next_page_token
        if not token:
            break
    assert seen == emails


async def test_delete_user_revokes_its_keys(stub: Stub, tenant: str) -> None:
    user = await _create_user(stub, tenant, "leaver@example.com")
    key = (await _create_key(stub, tenant, ["chat:write"], user=user.name)).api_key
    assert key.user == user.name
    request = pb.DeleteUserRequest(name=user.name, request_id=uuid.uuid4().hex)
    await stub.DeleteUser(request, metadata=admin(tenant).md, timeout=TIMEOUT)
    await stub.DeleteUser(request, metadata=admin(tenant).md, timeout=TIMEOUT)  # retry succeeds
    error = await fails(
        stub.DeleteUser(
            pb.DeleteUserRequest(name=user.name), metadata=admin(tenant).md, timeout=TIMEOUT
        )
    )
    assert error.code == grpc.StatusCode.NOT_FOUND
    listed = await stub.ListUsers(
        pb.ListUsersRequest(parent=f"tenants/{tenant}"), metadata=admin(tenant).md, timeout=TIMEOUT
    )
    assert user.name not in [u.name for u in listed.users]
    keys = await stub.ListApiKeys(
        pb.ListApiKeysRequest(parent=f"tenants/{tenant}", show_inactive=True),
        metadata=admin(tenant).md,
        timeout=TIMEOUT,
    )
    (revoked,) = [k for k in keys.api_keys if k.name == key.name]
    assert revoked.state == res.API_KEY_STATE_REVOKED


async def test_api_key_secret_is_shown_once_and_stored_hashed(
    stub: Stub, tenant: str, admin_db: asyncpg.Connection
) -> None:
    request = pb.CreateApiKeyRequest(
        parent=f"tenants/{tenant}",
        api_key=res.ApiKey(
            display_name="website widget",
            scopes=["chat:write", "knowledge:read"],
            requests_per_minute=30,
        ),
        request_id=uuid.uuid4().hex,
    )
    created = await stub.CreateApiKey(request, metadata=admin(tenant).md, timeout=TIMEOUT)
    key, secret = created.api_key, created.secret
    key_id = key.name.rsplit("/", 1)[1]
    assert secret.startswith(f"smk_{key_id}_")
    assert secret.startswith(key.prefix)
    assert key.state == res.API_KEY_STATE_ACTIVE
    assert list(key.scopes) == ["chat:write", "knowledge:read"]
    assert key.requests_per_minute == 30

    retry = await stub.CreateApiKey(request, metadata=admin(tenant).md, timeout=TIMEOUT)
    assert retry.api_key == key
    assert retry.secret == ""

    row = await admin_db.fetchrow(
        "SELECT * FROM app.api_keys WHERE key_id = $1 AND tenant_id = $2", key_id, tenant
    )
    assert row is not None
    stored = " ".join(str(value) for value in row.values())
    parsed = apikeys.parse(secret)
    assert parsed is not None
    assert parsed[0] == key_id
    secret_part = parsed[1]
    assert secret_part not in stored
    assert secret not in stored
    assert apikeys.verify(secret_part, bytes(row["secret_hash"]))
    assert bytes(row["secret_hash"]) == hashlib.sha256(secret_part.encode()).digest()

    listed = await stub.ListApiKeys(
        pb.ListApiKeysRequest(parent=f"tenants/{tenant}"),
        metadata=reader(tenant).md,
        timeout=TIMEOUT,
    )
    assert [k.name for k in listed.api_keys] == [key.name]
    assert secret_part not in listed.SerializeToString().decode("latin-1")


async def test_api_key_validation(stub: Stub, tenant: str) -> None:
    past = timestamp_pb2.Timestamp()
    past.FromDatetime(datetime.now(UTC) - timedelta(minutes=1))
    cases: list[tuple[str, res.ApiKey]] = [
        ("api_key.scopes", res.ApiKey(scopes=[])),
        ("api_key.scopes", res.ApiKey(scopes=["chat:write", "root"])),
        ("api_key.expire_time", res.ApiKey(scopes=["chat:write"], expire_time=past)),
        ("api_key.requests_per_minute", res.ApiKey(scopes=["chat:write"], requests_per_minute=-1)),
        ("api_key.user", res.ApiKey(scopes=["chat:write"], user="tenants/someone-else/users/x")),
    ]
    for field, key in cases:
        request = pb.CreateApiKeyRequest(parent=f"tenants/{tenant}", api_key=key, request_id="r")
        error = await fails(stub.CreateApiKey(request, metadata=admin(tenant).md, timeout=TIMEOUT))
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT, field
        assert error.reason == "VALIDATION_FAILED"
        assert error.metadata["field"] == field
    future = timestamp_pb2.Timestamp()
    future.FromDatetime(datetime.now(UTC) + timedelta(days=30))
    created = (await _create_key(stub, tenant, ["runs:read"], expire_time=future)).api_key
    assert created.expire_time == future


async def test_revoke_is_idempotent_and_hides_inactive_keys(stub: Stub, tenant: str) -> None:
    kept = (await _create_key(stub, tenant, ["chat:write"])).api_key
    gone = (await _create_key(stub, tenant, ["chat:write"])).api_key
    first = await stub.RevokeApiKey(
        pb.RevokeApiKeyRequest(name=gone.name, reason="leaked in a screenshot"),
        metadata=admin(tenant).md,
        timeout=TIMEOUT,
    )
    assert first.api_key.state == res.API_KEY_STATE_REVOKED
    assert first.api_key.revoke_time.seconds > 0
    second = await stub.RevokeApiKey(
        pb.RevokeApiKeyRequest(name=gone.name), metadata=admin(tenant).md, timeout=TIMEOUT
    )
    assert second.api_key == first.api_key
    active = await stub.ListApiKeys(
        pb.ListApiKeysRequest(parent=f"tenants/{tenant}"),
        metadata=admin(tenant).md,
        timeout=TIMEOUT,
    )
    assert [k.name for k in active.api_keys] == [kept.name]
    every = await stub.ListApiKeys(
        pb.ListApiKeysRequest(parent=f"tenants/{tenant}", show_inactive=True),
        metadata=admin(tenant).md,
        timeout=TIMEOUT,
    )
    assert [k.name for k in every.api_keys] == [gone.name, kept.name]  # newest first


async def test_api_keys_page_newest_first(stub: Stub, tenant: str) -> None:
    names = [(await _create_key(stub, tenant, ["chat:write"])).api_key.name for _ in range(5)]
    seen: list[str] = []
    token = ""
    for _ in range(10):
        reply = await stub.ListApiKeys(
            pb.ListApiKeysRequest(parent=f"tenants/{tenant}", page_size=2, page_token=token),
            metadata=admin(tenant).md,
            timeout=TIMEOUT,
        )
        seen.extend(k.name for k in reply.api_keys)
        token = reply.next_page_token
        if not token:
            break
    assert seen == list(reversed(names))


async def test_a_tenant_cannot_touch_another_tenants_users_or_keys(stub: Stub, tenant: str) -> None:
    victim = (await create_tenant(stub)).name.removeprefix("tenants/")
    user = await _create_user(stub, victim, "victim@example.com")
    key = (await _create_key(stub, victim, ["chat:write"])).api_key
    me = admin(tenant).md
    calls: list[Awaitable[Any]] = [
        stub.ListApiKeys(
            pb.ListApiKeysRequest(parent=f"tenants/{victim}"), metadata=me, timeout=TIMEOUT
        ),
        stub.RevokeApiKey(pb.RevokeApiKeyRequest(name=key.name), metadata=me, timeout=TIMEOUT),
        stub.ListUsers(
            pb.ListUsersRequest(parent=f"tenants/{victim}"), metadata=me, timeout=TIMEOUT
        ),
        stub.DeleteUser(pb.DeleteUserRequest(name=user.name), metadata=me, timeout=TIMEOUT),
        stub.CreateApiKey(
            pb.CreateApiKeyRequest(
                parent=f"tenants/{victim}", api_key=res.ApiKey(scopes=["admin"]), request_id="x"
            ),
            metadata=me,
            timeout=TIMEOUT,
        ),
    ]
    for call in calls:
        error = await fails(call)
        assert error.code == grpc.StatusCode.NOT_FOUND
        assert error.reason == "RESOURCE_NOT_FOUND"
    # A key id of another tenant named under the caller's own tenant is just as unknown.
    own_path = key.name.replace(f"tenants/{victim}", f"tenants/{tenant}")
    error = await fails(
        stub.RevokeApiKey(pb.RevokeApiKeyRequest(name=own_path), metadata=me, timeout=TIMEOUT)
    )
    assert error.code == grpc.StatusCode.NOT_FOUND
    still = await stub.ListApiKeys(
        pb.ListApiKeysRequest(parent=f"tenants/{victim}"), metadata=OPERATOR.md, timeout=TIMEOUT
    )
    assert [k.state for k in still.api_keys] == [res.API_KEY_STATE_ACTIVE]
