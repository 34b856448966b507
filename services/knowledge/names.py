"""Resource names of the knowledge service (AIP-122) and the enums' database spellings."""

from __future__ import annotations

import re
import uuid

from services.kit import errors, tenancy
from supportmesh.knowledge.v1 import knowledge_service_pb2 as pb

_TENANT = r"tenants/([a-z][a-z0-9-]{2,62})"
_PARENT = re.compile(f"^{_TENANT}$")
_DOCUMENT = re.compile(f"^{_TENANT}/documents/([A-Za-z0-9._-]{{1,128}})$")
_SETTINGS = re.compile(f"^{_TENANT}/knowledgeSettings$")

STATUS_NAMES: dict[pb.DocumentStatus.ValueType, str] = {
    pb.DOCUMENT_STATUS_QUEUED: "QUEUED",
    pb.DOCUMENT_STATUS_PROCESSING: "PROCESSING",
    pb.DOCUMENT_STATUS_INDEXED: "INDEXED",
    pb.DOCUMENT_STATUS_FAILED: "FAILED",
}
STATUS_VALUES = {name: value for value, name in STATUS_NAMES.items()}
KIND_NAMES: dict[pb.DocumentKind.ValueType, str] = {
    pb.DOCUMENT_KIND_UNSPECIFIED: "ARTICLE",
    pb.DOCUMENT_KIND_ARTICLE: "ARTICLE",
    pb.DOCUMENT_KIND_FAQ: "FAQ",
}
KIND_VALUES = {"ARTICLE": pb.DOCUMENT_KIND_ARTICLE, "FAQ": pb.DOCUMENT_KIND_FAQ}


def parent(tenant_id: str) -> str:
    """``tenants/{tenant}``."""
    return f"tenants/{tenant_id}"


def document(tenant_id: str, document_id: str) -> str:
    """``tenants/{tenant}/documents/{document}``."""
    return f"tenants/{tenant_id}/documents/{document_id}"


def settings(tenant_id: str) -> str:
    """``tenants/{tenant}/knowledgeSettings``."""
    return f"tenants/{tenant_id}/knowledgeSettings"


def _check(match: re.Match[str] | None, name: str, field: str, expected: str) -> re.Match[str]:
    if match is None:
        raise errors.InvalidArgument(f"{field} must be {expected}", field=field)
    # The caller's own tenant (or any, for the platform operator); another tenant's name
    # answers NOT_FOUND so its ids are never disclosed.
    tenancy.authorize_name(name, field)
    return match


def authorize_parent(name: str, field: str = "parent") -> str:
    """The tenant of ``tenants/{tenant}``, which the verified caller may act in."""
    return _check(_PARENT.match(name), name, field, "tenants/{tenant}").group(1)


def authorize_document(name: str, field: str = "name") -> tuple[str, str]:
    """``(tenant, document id)`` of a document name the verified caller may act on."""
    match = _check(_DOCUMENT.match(name), name, field, "tenants/{tenant}/documents/{document}")
    try:
        document_id = str(uuid.UUID(match.group(2)))
    except ValueError:
        # Well-formed but not an id this service hands out: nothing by that name exists.
        raise errors.NotFound(f"{name} not found", field=field) from None
    return match.group(1), document_id


def authorize_settings(name: str, field: str = "name") -> str:
    """The tenant of ``tenants/{tenant}/knowledgeSettings`` the verified caller may act on."""
    match = _SETTINGS.match(name)
    return _check(match, name, field, "tenants/{tenant}/knowledgeSettings").group(1)
