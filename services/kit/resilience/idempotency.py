"""Idempotency keys in the seed's format ``{service}:{tenant_id}:{resource_id}:{timestamp}``.

A key is a pure function of the operation, the tenant, the run, the step and the run's start
time: nothing about the attempt goes in, so a retried attempt or a replayed run sends the
same key and the provider applies the call once. ``service`` is the operation (tool) name,
so a step's forward call and its compensation get different keys; ``resource_id`` is
``{run_id}.{step_id}``; ``timestamp`` is the run's start in Unix seconds. Parts are
percent-encoded, so a ``:`` inside a step id cannot shift the fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote

_SAFE = "-_.~@+="  # kept as is; ':' and '%' (and anything else unusual) are encoded


@dataclass(frozen=True)
class IdempotencyKey:
    """The four parts of a key."""

    service: str
    tenant_id: str
    resource_id: str
    timestamp: int

    def __post_init__(self) -> None:
        """Refuse empty parts."""
        if not (self.service and self.tenant_id and self.resource_id):
            raise ValueError("service, tenant_id and resource_id are required")

    def __str__(self) -> str:
        """The wire form."""
        parts = (self.service, self.tenant_id, self.resource_id, str(self.timestamp))
        return ":".join(quote(part, safe=_SAFE) for part in parts)

    @classmethod
    def parse(cls, text: str) -> IdempotencyKey:
        """Read a key's wire form back."""
        parts = text.split(":")
        if len(parts) != 4 or not parts[3].lstrip("-").isdigit():
            raise ValueError(f"not an idempotency key: {text!r}")
        service, tenant_id, resource_id, timestamp = parts
        return cls(unquote(service), unquote(tenant_id), unquote(resource_id), int(timestamp))


def step_key(service: str, tenant_id: str, run_id: str, step_id: str, run_started: datetime) -> str:
    """The key of ``step_id``'s call to ``service`` in run ``run_id`` (same on every attempt)."""
    if run_started.tzinfo is None:
        raise ValueError("run_started must be timezone-aware")
    if not (run_id and step_id):
        raise ValueError("run_id and step_id are required")
    stamp = int(run_started.astimezone(UTC).timestamp())
    return str(IdempotencyKey(service, tenant_id, f"{run_id}.{step_id}", stamp))
