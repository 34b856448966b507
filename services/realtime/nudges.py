"""Wake this instance's quiet connections when their session queues a message elsewhere.

A connection attached here while another instance answers its session would otherwise
notice only at its next poll, which backs off while the session is quiet. One pub/sub
subscription per instance hears every queued message and nudges the local subscribers of
that session. Messages published while the subscription is down are not replayed: the
connections' polling finds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.exceptions import RedisError

from services.realtime.hub import Hub
from services.realtime.sessions import Sessions

_log = logging.getLogger("supportmesh.realtime.nudges")


async def relay(sessions: Sessions, hub: Hub, retry_s: float) -> None:
    """Nudge ``hub`` for every message queued on any instance, until cancelled."""
    while True:
        try:
            async for key in sessions.nudges():
                hub.nudge(key)
        except RedisError:
            _log.warning("nudge subscription failed; resubscribing", exc_info=True)
        await asyncio.sleep(retry_s)


class Nudges:
    """The instance's nudge relay as a background task."""

    def __init__(self, sessions: Sessions, hub: Hub, retry_s: float) -> None:
        """Relay from ``sessions`` to ``hub``; resubscribe ``retry_s`` after a failure."""
        self._task = asyncio.create_task(relay(sessions, hub, retry_s), name="realtime-nudges")

    async def stop(self) -> None:
        """Stop relaying."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
