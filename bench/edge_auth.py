"""What authentication and rate limiting add at the edge: RouterService.Decide with and without.

Paths, side by side (one request at a time, interleaved rounds so noise hits all alike):

- REST through the real edge (ext_authz Check → API key or JWT, scope, Valkey token bucket
  and quota script), with an API key and with a JWT;
- REST through a second Envoy rendered without ext_authz, whose routes set the trusted
  headers themselves: the same hops minus the authorization;
- native gRPC through both Envoys (JWT / none), and gRPC straight to the router with the
  trusted metadata (no Envoy at all).

The tenant is on a plan created for the benchmark with limits far above what it sends, so
every request runs the full rate-limit and quota script without being refused. Figures,
not a verdict: the exit code is 0 whether or not the goal is met.
Run it as ``.venv/bin/python bench/edge_auth.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import aiohttp
import asyncpg
import grpc

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stats import Cell, print_table, summarize
from services.kit import context, gateway
from services.kit.devstack import Platform
from services.kit.stack import EnvoyServer, free_port
from supportmesh.control.v1 import control_service_pb2 as cpb
from supportmesh.control.v1 import control_service_pb2_grpc as cpb_grpc
from supportmesh.control.v1 import resources_pb2 as res
from supportmesh.router.v1 import router_service_pb2 as pb
from supportmesh.router.v1 import router_service_pb2_grpc as pb_grpc
from supportmesh.spec.v1 import tier_pb2

DECIDE = "/v1/router/decide"
GOAL_MS = 1.0
QUERY = "Hi, where is my order #10234? It was supposed to arrive yesterday."
REST_KEY, REST_JWT, REST_OPEN = "REST auth (API key)", "REST auth (JWT)", "REST no ext_authz"
GRPC_JWT, GRPC_OPEN, DIRECT = "gRPC auth (JWT)", "gRPC no ext_authz", "gRPC direct"
PATHS = (REST_KEY, REST_JWT, REST_OPEN, GRPC_JWT, GRPC_OPEN, DIRECT)
BENCH_PLAN = """
INSERT INTO app.plans (plan_id, display_name, limits, pricing) VALUES ('bench', 'Bench',
 '{"requestsPerMinute": 100000000, "tokensPerMonth": "1000000000000", "costPerMonthUsd": 1e9}',
 '{}') ON CONFLICT (plan_id) DO NOTHING
"""

Call = Callable[[], Awaitable[None]]


async def provision(platform: Platform) -> tuple[str, str, str]:
    """A tenant on the bench plan, an API key with router:decide and a JWT from it."""
    connection = await asyncpg.connect(platform.admin_database_url)
    try:
        await connection.execute(BENCH_PLAN)
    finally:
        await connection.close()
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    operator = (("x-api-key", platform.platform_admin_key),)
    target = platform.edge_url.removeprefix("http://")
    async with grpc.aio.insecure_channel(target) as channel:
        control = cpb_grpc.ControlServiceStub(channel)
        await control.CreateTenant(
            cpb.CreateTenantRequest(
                tenant=res.Tenant(display_name="Bench", plan="plans/bench"),
                tenant_id=tenant,
                request_id=uuid.uuid4().hex,
            ),
            metadata=operator,
            timeout=10,
        )
        created = await control.CreateApiKey(
            cpb.CreateApiKeyRequest(
                parent=f"tenants/{tenant}",
                api_key=res.ApiKey(display_name="bench", scopes=["router:decide"]),
                request_id=uuid.uuid4().hex,
            ),
            metadata=operator,
            timeout=10,
        )
    async with aiohttp.ClientSession() as session:
        body = {"apiKey": created.secret}
        async with session.post(platform.edge_url + "/v1/auth/token", json=body) as reply:
            token = str((await reply.json())["accessToken"])
    return tenant, created.secret, token


def open_envoy(platform: Platform, tenant: str, state: Path) -> tuple[EnvoyServer, str]:
    """A second Envoy without ext_authz whose routes vouch for ``tenant`` themselves."""
    upstreams = platform.upstream_ports()
    listen, admin = free_port(), free_port()
    config = gateway.render(
        platform.catalog, upstreams, listen_port=listen, admin_port=admin, authz=False
    )
    trusted = {context.TENANT_KEY: tenant, context.SCOPES_KEY: "router:decide"}
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    for route in manager["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]:
        if "route" in route:
            route.setdefault("request_headers_to_add", []).extend(
                {"header": {"key": key, "value": value}} for key, value in trusted.items()
            )
    path = gateway.write(config, state / "envoy-open" / "envoy.yaml")
    envoy = EnvoyServer(path, admin, state / "logs" / "envoy-open.log")
    envoy.start()
    return envoy, f"127.0.0.1:{listen}"


def rest(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Call:
    """POST Decide as JSON; raise unless the answer is 200."""
    body = json.dumps({"query": QUERY, "tier_preference": "balanced"}).encode()
    all_headers = {"content-type": "application/json", **headers}

    async def call() -> None:
        async with session.post(url + DECIDE, data=body, headers=all_headers) as reply:
            payload = await reply.read()
            if reply.status != 200:
                raise RuntimeError(f"HTTP {reply.status}: {payload[:200]!r}")

    return call


def native(stub: pb_grpc.RouterServiceAsyncStub, metadata: Sequence[tuple[str, str]]) -> Call:
    """Call Decide over gRPC with ``metadata``."""
    request = pb.DecideRequest(query=QUERY, tier_preference=tier_pb2.BALANCED)

    async def call() -> None:
        await stub.Decide(request, metadata=tuple(metadata), timeout=5)

    return call


async def measure(calls: dict[str, Call], requests: int, batch: int) -> dict[str, list[float]]:
    """Latencies in ms per path, ``batch`` at a time per path, rotating which goes first."""
    samples: dict[str, list[float]] = {name: [] for name in PATHS}
    for index in range(max(1, requests // batch)):
        shift = index % len(PATHS)
        for name in PATHS[shift:] + PATHS[:shift]:
            for _ in range(batch):
                started = time.perf_counter_ns()
                await calls[name]()
                samples[name].append((time.perf_counter_ns() - started) / 1e6)
    return samples


def report(samples: dict[str, list[float]]) -> None:
    """Print the side-by-side table and the added milliseconds."""
    stats = {name: summarize(values) for name, values in samples.items()}
    rows: list[list[Cell]] = [[name, s.n, s.p50, s.p90, s.p99, s.mean] for name, s in stats.items()]
    print_table(["path", "n", "p50 ms", "p90 ms", "p99 ms", "mean ms"], rows)
    print()
    lines: list[list[Cell]] = []
    for authed, bare in ((REST_KEY, REST_OPEN), (REST_JWT, REST_OPEN), (GRPC_JWT, GRPC_OPEN)):
        added_p50 = stats[authed].p50 - stats[bare].p50
        added_p99 = stats[authed].p99 - stats[bare].p99
        verdict = "meets goal" if added_p50 <= GOAL_MS else "misses goal"
        lines.append([f"{authed} - {bare}", added_p50, added_p99, f"<= {GOAL_MS:g}", verdict])
    envoy_p50 = stats[REST_OPEN].p50 - stats[DIRECT].p50
    envoy_p99 = stats[REST_OPEN].p99 - stats[DIRECT].p99
    lines.append([f"{REST_OPEN} - {DIRECT}", envoy_p50, envoy_p99, "-", "(Envoy + JSON only)"])
    print_table(["added by auth + rate limit", "p50 ms", "p99 ms", "goal p50", "verdict"], lines)


async def bench(platform: Platform, state: Path, args: argparse.Namespace) -> None:
    """Provision, start the open Envoy, warm up every path and measure."""
    tenant, api_key, token = await provision(platform)
    envoy, open_target = open_envoy(platform, tenant, state)
    try:
        edge_target = platform.edge_url.removeprefix("http://")
        bearer = {"authorization": f"Bearer {token}"}
        trusted = ((context.TENANT_KEY, tenant), (context.SCOPES_KEY, "router:decide"))
        options = [("grpc.enable_http_proxy", 0)]
        async with (
            aiohttp.ClientSession() as session,
            grpc.aio.insecure_channel(edge_target, options=options) as edge,
            grpc.aio.insecure_channel(open_target, options=options) as bare,
            grpc.aio.insecure_channel(f"127.0.0.1:{platform.ports['router']}") as direct,
        ):
            calls = {
                REST_KEY: rest(session, platform.edge_url, {"x-api-key": api_key}),
                REST_JWT: rest(session, platform.edge_url, bearer),
                REST_OPEN: rest(session, f"http://{open_target}", {}),
                GRPC_JWT: native(pb_grpc.RouterServiceStub(edge), tuple(bearer.items())),
                GRPC_OPEN: native(pb_grpc.RouterServiceStub(bare), ()),
                DIRECT: native(pb_grpc.RouterServiceStub(direct), trusted),
            }
            await measure(calls, args.warmup, max(1, args.warmup // 4))
            print(f"warm-up : {args.warmup} requests per path done; measuring …", flush=True)
            samples = await measure(calls, args.requests, args.batch)
        print()
        print(f"Sequential latency, {args.requests} requests per path, rounds of {args.batch}")
        report(samples)
    finally:
        envoy.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Start the platform in a temporary directory, run, print, clean up."""
    parser = argparse.ArgumentParser(prog="edge_auth", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="requests per path")
    parser.add_argument("--batch", type=int, default=100, help="requests per path per round")
    parser.add_argument("--warmup", type=int, default=300, help="warm-up requests per path")
    args = parser.parse_args(argv)
    state = Path(tempfile.mkdtemp(prefix="supportmesh-bench-auth-"))
    platform = Platform(state_dir=state, fast=True)
    print("edge auth: RouterService.Decide with and without ext_authz + rate limit")
    keep = False
    try:
        platform.start()
        asyncio.run(bench(platform, state, args))
    except BaseException:
        keep = True
        raise
    finally:
        platform.stop()
        if keep:
            print(f"logs kept in {state / 'logs'}", file=sys.stderr)
        else:
            shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
