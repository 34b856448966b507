"""Runs outlive the calls that start them."""

from __future__ import annotations

import asyncio
import time

from services.kit import context
from services.orchestrator.runs import _detached


async def _current() -> context.CallContext | None:
    return context.current()


async def test_a_run_task_keeps_the_callers_identity_but_not_its_deadline() -> None:
    call = context.CallContext("req-1", "/x", time.monotonic() + 1, tenant_id="acme")
    token = context.bind(call)
    try:
        task = asyncio.create_task(_current(), context=_detached())
    finally:
        context.reset(token)
    found = await task
    assert found is not None
    assert (found.request_id, found.tenant_id, found.deadline) == ("req-1", "acme", None)
