"""What the HTTP sandboxes share: lifecycle, JSON errors, idempotency keys, the CLI."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import hashlib
import json
import secrets
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

JsonObject = dict[str, Any]
IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"


def new_id(prefix: str) -> str:
    """A provider-style object id such as ``ch_3f9a…``."""
    return f"{prefix}_{secrets.token_hex(12)}"


def error_response(status: int, kind: str, code: str, message: str, **extra: Any) -> web.Response:
    """The providers' error envelope: ``{"error": {"type", "code", "message", …}}``."""
    body = {"error": {"type": kind, "code": code, "message": message, **extra}}
    return web.json_response(body, status=status)


async def json_body(request: web.Request) -> JsonObject:
    """The request's JSON object body, or a 400 answer raised as an HTTP exception."""
    try:
        body = await request.json() if request.can_read_body else {}
    except json.JSONDecodeError:
        raise _bad_request("body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _bad_request("body must be a JSON object")
    return body


def _bad_request(message: str) -> web.HTTPBadRequest:
    body = {
        "error": {"type": "invalid_request_error", "code": "parameter_invalid", "message": message}
    }
    return web.HTTPBadRequest(text=json.dumps(body), content_type="application/json")


@dataclass
class _Stored:
    """A completed request remembered under its idempotency key."""

    fingerprint: str
    status: int
    body: JsonObject


Handler = Callable[[], Awaitable[tuple[int, JsonObject]]]


@dataclass
class IdempotencyStore:
    """Keys → first answer; same key and request replays it, a different request gets 409."""

    _done: dict[str, _Stored] = field(default_factory=dict)
    _running: set[str] = field(default_factory=set)

    @staticmethod
    def fingerprint(request: web.Request, body: JsonObject) -> str:
        """What makes two requests "the same": method, path and canonical JSON body."""
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        text = f"{request.method} {request.path}\n{canonical}"
        return hashlib.sha256(text.encode()).hexdigest()

    async def run(self, key: str, fingerprint: str, handler: Handler) -> web.Response:
        """Answer from memory for a known key, else run ``handler`` and remember a 2xx–4xx."""
        stored = self._done.get(key)
        if stored is not None:
            if stored.fingerprint != fingerprint:
                return error_response(
                    409, "idempotency_error", "idempotency_key_mismatch",
                    "this idempotency key was used with a different request",
                )  # fmt: skip
            return web.json_response(
                stored.body, status=stored.status, headers={REPLAYED_HEADER: "true"}
            )
        if key in self._running:
            return error_response(
                409, "idempotency_error", "idempotency_key_in_use",
                "a request with this idempotency key is still being processed; retry later",
            )  # fmt: skip
        self._running.add(key)
        try:
            status, body = await handler()
        finally:
            self._running.discard(key)
        if status < 500:  # server errors are not final: a retry runs the request again
            self._done[key] = _Stored(fingerprint, status, copy.deepcopy(body))
        return web.json_response(body, status=status)


class HttpSandbox:
    """An aiohttp application with a start/stop lifecycle on a chosen or free port."""

    def __init__(self, app: web.Application) -> None:
        """Serve ``app``."""
        self.app = app
        self.port = 0
        self.host = "127.0.0.1"
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        return f"http://{self.host}:{self.port}"

    async def run(self, port: int = 0, host: str = "127.0.0.1") -> int:
        """Start listening (port 0 picks a free one) and return the bound port."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.host, self.port = host, int(self._runner.addresses[0][1])
        return self.port

    async def close(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class Runnable(Protocol):
    """Anything with the sandbox lifecycle."""

    async def run(self, port: int = 0, host: str = "127.0.0.1") -> int:
        """Start and return the bound port."""

    async def close(self) -> None:
        """Stop."""


def cli(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every sandbox takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    return parser


def serve(sandbox: Runnable, host: str, port: int, name: str) -> None:
    """Run ``sandbox`` until SIGINT or SIGTERM."""

    async def main() -> None:
        bound = await sandbox.run(port=port, host=host)
        print(f"{name} sandbox listening on {host}:{bound}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        await sandbox.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
