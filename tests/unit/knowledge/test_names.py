"""Resource names: the tenant in a name must be the verified caller's."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from services.kit import context, errors
from services.knowledge import names

DOC = str(uuid.uuid4())


@pytest.fixture
def caller() -> Iterator[None]:
    token = context.bind(context.CallContext(request_id="r", method="m", tenant_id="acme"))
    yield
    context.reset(token)


@pytest.mark.usefixtures("caller")
def test_own_names_are_accepted() -> None:
    assert names.authorize_parent("tenants/acme") == "acme"
    assert names.authorize_document(f"tenants/acme/documents/{DOC}") == ("acme", DOC)
    assert names.authorize_settings("tenants/acme/knowledgeSettings") == "acme"


@pytest.mark.usefixtures("caller")
def test_another_tenants_names_are_not_found() -> None:
    with pytest.raises(errors.NotFound):
        names.authorize_parent("tenants/other")
    with pytest.raises(errors.NotFound):
        names.authorize_document(f"tenants/other/documents/{DOC}")


@pytest.mark.usefixtures("caller")
def test_malformed_names_are_invalid_and_unknown_ids_not_found() -> None:
    with pytest.raises(errors.InvalidArgument):
        names.authorize_parent("acme")
    with pytest.raises(errors.InvalidArgument):
        names.authorize_document("tenants/acme/things/x")
    with pytest.raises(errors.NotFound):
        names.authorize_document("tenants/acme/documents/not-a-uuid")


def test_the_platform_operator_may_name_any_tenant() -> None:
    call = context.CallContext(request_id="r", method="m", platform_admin=True)
    token = context.bind(call)
    try:
        assert names.authorize_parent("tenants/other") == "other"
    finally:
        context.reset(token)


def test_without_trusted_metadata_nothing_is_authorized() -> None:
    token = context.bind(context.CallContext(request_id="r", method="m"))
    try:
        with pytest.raises(errors.Unauthenticated):
            names.authorize_parent("tenants/acme")
    finally:
        context.reset(token)
