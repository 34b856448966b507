"""Signing key rotation with the edge's CLI: tokens signed by the old key keep working until
it retires, new tokens come from the new key, and a retired key's tokens are refused."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx

from services.kit.devstack import Platform
from tests.integration.edge import provision
from tests.integration.edge.conftest import TRANSPORTS, Edge, bearer

T = TypeVar("T")
# The edge reloads its keys every couple of seconds; this only bounds a broken run.
PATIENCE_S = 30.0


def edge_cli(platform: Platform, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "services.edge", *args],
        env=platform.env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


async def eventually(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool]) -> T:
    """Poll ``probe`` until ``done`` holds for its result."""
    give_up = time.monotonic() + PATIENCE_S
    while True:
        result = await probe()
        if done(result) or time.monotonic() > give_up:
            return result
        await asyncio.sleep(0.2)


async def jwks_kids(http: httpx.AsyncClient) -> set[str]:
    reply = await http.get("/v1/auth/jwks")
    return {jwk["kid"] for jwk in reply.json()["keys"]}


async def test_rotation_then_retirement(
    edge: Edge, http: httpx.AsyncClient, platform: Platform, key: provision.Key
) -> None:
    old = await provision.issue_token(platform, key)
    new_kid = edge_cli(platform, "rotate-key", "--retire-previous-after", "-1").split()[-1]
    assert new_kid != old.signing_key_id

    new = await eventually(
        lambda: provision.issue_token(platform, key), lambda t: t.signing_key_id == new_kid
    )
    assert new.signing_key_id == new_kid
    assert {old.signing_key_id, new_kid} <= await jwks_kids(http)
    for transport in TRANSPORTS:
        for token in (old.access_token, new.access_token):
            assert (await edge.decide(transport, bearer(token))).http == 200

    assert edge_cli(platform, "retire-key", old.signing_key_id) == f"retired {old.signing_key_id}"
    refused = await eventually(
        lambda: edge.decide("rest", bearer(old.access_token)), lambda o: o.http == 401
    )
    assert (refused.http, refused.reason) == (401, "CREDENTIALS_INVALID")
    for transport in TRANSPORTS:
        outcome = await edge.decide(transport, bearer(old.access_token))
        assert (outcome.http, outcome.reason) == (401, "CREDENTIALS_INVALID"), outcome
        assert (await edge.decide(transport, bearer(new.access_token))).http == 200
    assert old.signing_key_id not in await jwks_kids(http)
