"""CORS at the edge, with an Envoy rendered for one allowed origin in front of the session's
services: preflights need no credential, and browsers can read refusals and limits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from services.kit import gateway
from services.kit.devstack import Platform
from services.kit.stack import EnvoyServer, free_port
from tests.integration.edge import provision

ORIGIN = "https://app.example"
PREFLIGHT = {"origin": ORIGIN, "access-control-request-method": "POST",
             "access-control-request-headers": "x-api-key, content-type"}  # fmt: skip


@pytest.fixture(scope="module")
def cors_edge(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of an Envoy like the session's, allowing ``ORIGIN``."""
    state = Path(tmp_path_factory.mktemp("cors-envoy"))
    ports = platform.upstream_ports()
    listen, admin = free_port(), free_port()
    config = gateway.render(
        platform.catalog, ports, listen_port=listen, admin_port=admin, cors_origins=[ORIGIN]
    )
    envoy = EnvoyServer(gateway.write(config, state / "envoy.yaml"), admin, state / "envoy.log")
    envoy.start()
    try:
        yield f"http://127.0.0.1:{listen}"
    finally:
        envoy.stop()


@pytest.fixture
async def browser(cors_edge: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=cors_edge, timeout=10) as client:
        yield client


@pytest.mark.parametrize(
    "path", ["/v1/router/decide", "/supportmesh.router.v1.RouterService/Decide"]
)
async def test_preflight_is_answered_without_credential(
    browser: httpx.AsyncClient, path: str
) -> None:
    reply = await browser.options(path, headers=PREFLIGHT)
    assert reply.status_code == 200
    assert reply.headers["access-control-allow-origin"] == ORIGIN
    allowed = reply.headers["access-control-allow-headers"]
    assert "x-api-key" in allowed
    assert "authorization" in allowed


async def test_refusals_are_readable_cross_origin(browser: httpx.AsyncClient) -> None:
    reply = await browser.post(
        "/v1/router/decide", json={"query": "hi"}, headers={"origin": ORIGIN}
    )
    assert reply.status_code == 401
    assert reply.headers["access-control-allow-origin"] == ORIGIN
    assert "retry-after" in reply.headers["access-control-expose-headers"]


async def test_authenticated_call_works_cross_origin(
    browser: httpx.AsyncClient, platform: Platform, key: provision.Key
) -> None:
    headers = {"origin": ORIGIN, "x-api-key": key.secret}
    reply = await browser.post("/v1/router/decide", json={"query": "hi"}, headers=headers)
    assert reply.status_code == 200
    assert reply.headers["access-control-allow-origin"] == ORIGIN


async def test_other_origins_get_no_cors_headers(browser: httpx.AsyncClient) -> None:
    reply = await browser.options(
        "/v1/router/decide", headers={**PREFLIGHT, "origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in reply.headers
