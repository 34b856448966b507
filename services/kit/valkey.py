"""Valkey (Redis protocol) clients whose pool waits for a connection under a burst.

redis-py's default pool raises ``MaxConnectionsError`` as soon as its 100 connections are
in use, which turns a burst of concurrent requests into failures. A blocking pool queues
the excess for up to ``wait_s`` instead, and bounds the connections a process opens.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis


def connect(
    url: str, *, max_connections: int = 128, wait_s: float = 5.0, decode_responses: bool = False
) -> Redis:
    """A client for ``url``; closing it (``aclose``) closes its pool."""
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=wait_s, decode_responses=decode_responses
    )
    return Redis.from_pool(pool)
