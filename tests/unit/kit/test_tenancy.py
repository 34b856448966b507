from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest

from services.kit import context, errors, tenancy


@contextmanager
def calling(
    tenant: str = "", scopes: frozenset[str] = frozenset(), platform_admin: bool = False
) -> Iterator[None]:
    call = context.CallContext(
        request_id="r", method="/m", tenant_id=tenant, scopes=scopes, platform_admin=platform_admin
    )
    token = context.bind(call)
    try:
        yield
    finally:
        context.reset(token)


def reason(exc: pytest.ExceptionInfo[errors.DomainError]) -> str:
    return errors.reason_name(exc.value.reason)


def test_missing_tenant_metadata_is_unauthenticated() -> None:
    with calling(), pytest.raises(errors.Unauthenticated) as caught:
        tenancy.require_tenant()
    assert reason(caught) == "TENANT_CONTEXT_MISSING"
    with pytest.raises(errors.Unauthenticated):
        tenancy.require_tenant()  # no call context at all


def test_claimed_tenant_must_match_the_credential() -> None:
    with calling("acme"):
        assert tenancy.check_claimed_tenant("") == "acme"
        assert tenancy.check_claimed_tenant("acme") == "acme"
        with pytest.raises(errors.PermissionDenied) as caught:
            tenancy.check_claimed_tenant("globex")
    assert reason(caught) == "TENANT_MISMATCH"
    assert caught.value.code is grpc.StatusCode.PERMISSION_DENIED


def test_resource_names_of_other_tenants_are_not_found() -> None:
    with calling("acme"):
        assert tenancy.authorize_name("tenants/acme/runs/1") == "acme"
        with pytest.raises(errors.NotFound):
            tenancy.authorize_name("tenants/globex/runs/1")
        with pytest.raises(errors.InvalidArgument):
            tenancy.authorize_name("runs/1")
    with calling(platform_admin=True):
        assert tenancy.authorize_name("tenants/globex") == "globex"


def test_scopes() -> None:
    with calling("acme", frozenset({"runs:read"})):
        tenancy.require_scope("runs:read")
        with pytest.raises(errors.PermissionDenied) as caught:
            tenancy.require_scope("runs:write")
        with pytest.raises(errors.PermissionDenied):
            tenancy.require_platform_admin()
    assert reason(caught) == "SCOPE_MISSING"
    with calling("acme", frozenset({"admin"})):
        tenancy.require_scope("runs:write")
    with calling(platform_admin=True):
        tenancy.require_scope("anything")
        tenancy.require_platform_admin()
