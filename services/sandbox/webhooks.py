"""Signed webhooks: the sender's signature, the receiver's check, delivery with retries.

The signature header reads ``t=<unix seconds>,v1=<hex>`` where the hex is
HMAC-SHA256(secret, ``"<t>." + body``), as Stripe does; a receiver recomputes it over the raw
body, compares in constant time and refuses timestamps outside a tolerance window, which
stops replays of captured deliveries.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

SIGNATURE_HEADER = "Webhook-Signature"
DEFAULT_TOLERANCE_S = 300


class SignatureError(ValueError):
    """A webhook's signature header is missing, malformed, wrong or too old."""


def compute_signature(payload: bytes, secret: str, timestamp: int) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>." + payload``."""
    message = f"{timestamp}.".encode() + payload
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The signature header value for ``payload`` (timestamp defaults to now)."""
    stamp = int(time.time()) if timestamp is None else timestamp
    return f"t={stamp},v1={compute_signature(payload, secret, stamp)}"


def verify_signature(
    payload: bytes,
    header: str | None,
    secret: str,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> int:
    """Check ``header`` against the raw ``payload``: its timestamp, or SignatureError."""
    if not header:
        raise SignatureError("no signature header")
    stamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t" and value.isdigit():
            stamp = int(value)
        elif name == "v1" and value:
            candidates.append(value)  # several during a secret rotation
    if stamp is None or not candidates:
        raise SignatureError("signature header lacks t= or v1=")
    expected = compute_signature(payload, secret, stamp)
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise SignatureError("signature does not match the payload")
    current = time.time() if now is None else now
    if abs(current - stamp) > tolerance_s:
        raise SignatureError("signature timestamp is outside the tolerance window")
    return stamp


@dataclass(frozen=True)
class Delivery:
    """One attempt to deliver an event: HTTP status, or 0 when the connection failed."""

    event_id: str
    attempt: int
    status: int


@dataclass
class WebhookSender:
    """Posts signed events to one URL, retrying with exponential backoff until a 2xx."""

    url: str
    secret: str
    max_attempts: int = 5
    initial_backoff_s: float = 1.0
    timeout_s: float = 10.0
    deliveries: list[Delivery] = field(default_factory=list, init=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)
    _session: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)

    def send(self, event: dict[str, Any]) -> None:
        """Deliver ``event`` in the background."""
        task = asyncio.get_running_loop().create_task(self._deliver(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait until every pending delivery has succeeded or given up."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        """Abandon pending deliveries and close the HTTP session."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _deliver(self, event: dict[str, Any]) -> None:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout)
        payload = json.dumps(event, separators=(",", ":")).encode()
        delay = self.initial_backoff_s
        for attempt in range(1, self.max_attempts + 1):
            status = await self._post(payload)
            self.deliveries.append(Delivery(str(event["id"]), attempt, status))
            if 200 <= status < 300:
                return
            if attempt < self.max_attempts:
                await asyncio.sleep(delay)
                delay *= 2

    async def _post(self, payload: bytes) -> int:
        # Signed per attempt: a retry carries a fresh timestamp, as the providers do.
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(payload, self.secret)}
        assert self._session is not None
        try:
            async with self._session.post(self.url, data=payload, headers=headers) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError):
            return 0
