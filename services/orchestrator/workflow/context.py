"""What a run's nodes need besides their state, passed as the LangGraph runtime context."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from services.orchestrator.workflow.model import Workflow
from services.orchestrator.workflow.ports import Ports

if TYPE_CHECKING:
    from services.orchestrator.workflow.ahead import Ahead


async def _already_durable() -> None:
    """Without a deferring checkpointer every checkpoint is written as it is taken."""


def _nothing_ahead() -> Ahead | None:
    """Without an engine starting calls ahead, every step makes its own."""
    return None


@dataclass(frozen=True)
class WorkflowContext:
    """The workflow being run and the ports it calls; never checkpointed."""

    workflow: Workflow
    ports: Ports
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    clock: Callable[[], float] = time.monotonic
    # Jitter for retry backoff, so simultaneous runs do not retry in lockstep.
    jitter: Callable[[], float] = field(default=random.random)
    # Makes the run's newest checkpoint durable; awaited before a side effect is requested
    # (see services.orchestrator.workflow.durability).
    durable: Callable[[], Awaitable[None]] = _already_durable
    # The router call the engine started with the run, taken by the step it is for (see
    # services.orchestrator.workflow.ahead).
    ahead: Callable[[], Ahead | None] = _nothing_ahead
