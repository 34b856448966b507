"""Per-call context (request id, deadline, trusted tenant) carried across awaits.

The server interceptors fill it from inbound metadata; the client interceptors read it so
outbound calls inherit the request id, the remaining deadline and the trace.
"""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass

# Metadata keys; the x-supportmesh-* ones are set by the edge only (trusted, stripped from
# client input at the edge).
REQUEST_ID_KEY = "x-request-id"
TENANT_KEY = "x-supportmesh-tenant"
SUBJECT_KEY = "x-supportmesh-subject"
SCOPES_KEY = "x-supportmesh-scopes"
PLATFORM_ADMIN_KEY = "x-supportmesh-platform-admin"
# The tenant plan's limit on open chat connections, for the realtime service.
MAX_CONNECTIONS_KEY = "x-supportmesh-max-connections"
# The tenant a client says it acts for (optional): the edge refuses a call whose credential
# belongs to another tenant (403 TENANT_MISMATCH). It is not trusted metadata.
CLIENT_TENANT_KEY = "x-tenant-id"
# Every trusted key: the edge removes these from client input and sets its own.
TRUSTED_KEYS = (TENANT_KEY, SUBJECT_KEY, SCOPES_KEY, PLATFORM_ADMIN_KEY, MAX_CONNECTIONS_KEY)


@dataclass(frozen=True)
class CallContext:
    """What the current inbound call knows about itself."""

    request_id: str
    method: str
    deadline: float | None = None
    tenant_id: str = ""
    subject: str = ""
    scopes: frozenset[str] = frozenset()
    platform_admin: bool = False

    def time_remaining(self) -> float | None:
        """Seconds left before the inbound deadline, or None when there is none."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())


_current: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar(
    "supportmesh_call", default=None
)


def current() -> CallContext | None:
    """Return the context of the inbound call being served, if any."""
    return _current.get()


def bind(ctx: CallContext) -> contextvars.Token[CallContext | None]:
    """Make ``ctx`` current; pass the token to :func:`reset` when the call ends."""
    return _current.set(ctx)


def reset(token: contextvars.Token[CallContext | None]) -> None:
    """Restore the context that was current before :func:`bind`."""
    _current.reset(token)
