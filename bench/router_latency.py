"""How long the router takes to decide: in process and over gRPC, with real Valkey and PostgreSQL.

Starts PostgreSQL, Valkey and NATS from their wheels (free ports, a temporary directory),
applies the migrations, creates a tenant on the Pro plan, and builds the router in this
process with its real stores. Then, one request at a time over a mix of queries:

1. ``Router.decide`` in process without state I/O (features, model, bandit, reasoning);
2. ``Router.decide`` in process as served: the same plus queueing the decision for Valkey
   (written behind, pipelined, between requests; plan limits and bandit counters come from
   their caches, refreshed in the background);
3. ``RouterService.Decide`` over gRPC to the router served by ``start_server`` in this
   process, from a client in this process (client and server share one event loop);
4. the same from a client in another process, as callers in the mesh are.

Prints p50/p90/p99 and the ratios to the goals (p99 < 1 ms in process, < 3 ms over gRPC,
judged on the separate-process client); exit code 0 either way. Run it as
``.venv/bin/python bench/router_latency.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import asyncpg
import grpc
from google.protobuf import json_format

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stats import Cell, Summary, print_table, summarize
from services.kit import context
from services.kit.devstack import Platform
from services.kit.server import start_server
from services.kit.settings import InfraSettings
from services.kit.telemetry import Telemetry
from services.router.app import RouterSettings, build
from services.router.engine import Router
from supportmesh.router.v1 import router_service_pb2 as pb
from supportmesh.router.v1 import router_service_pb2_grpc as pb_grpc
from supportmesh.spec.v1 import tier_pb2

TENANT = "bench-router"
GOALS_MS = {"in process, as served": 1.0, "gRPC, client in another process": 3.0}
QUERIES = (
    "Where is my order #10234? It was supposed to arrive yesterday.",
    "What are your opening hours in Berlin?",
    "I was charged twice for #55123, one charge was partly refunded; how much am I owed?",
    "We're 40 agents on Zendesk; can you quote the Business plan with SSO?",
    "This is unacceptable! Cancel order #77812 and refund my card now!!",
    "Track parcel 1Z12345678 and answer as JSON",
)
SCHEMA = {"type": "object", "properties": {"status": {"type": "string"}}}


# The other-process client: same requests, samples back as JSON on stdout.
CLIENT = """
import asyncio, gc, json, sys, time
import grpc
from supportmesh.router.v1 import router_service_pb2 as pb, router_service_pb2_grpc as pb_grpc

async def main(port, n, warmup, blobs):
    requests = [pb.DecideRequest.FromString(bytes.fromhex(b)) for b in blobs]
    metadata = (("x-supportmesh-tenant", requests[0].tenant_id),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.RouterServiceStub(channel)
        for i in range(warmup):
            await stub.Decide(requests[i % len(requests)], timeout=5, metadata=metadata)
        gc.collect()
        gc.freeze()
        samples = []
        for i in range(n):
            started = time.perf_counter()
            await stub.Decide(requests[i % len(requests)], timeout=5, metadata=metadata)
            samples.append((time.perf_counter() - started) * 1000)
    print(json.dumps(samples))

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]))
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="measured calls per path")
    parser.add_argument("--warmup", type=int, default=500, help="unmeasured calls per path")
    return parser.parse_args(argv)


async def measure(call: Callable[[int], Awaitable[object]], n: int, warmup: int) -> list[float]:
    for i in range(warmup):
        await call(i)
    samples = []
    for i in range(n):
        started = time.perf_counter()
        await call(i)
        samples.append((time.perf_counter() - started) * 1000)
        # Let background work (the decision write-behind, cache reloads) run between
        # requests, as it does between a server's requests, rather than never.
        await asyncio.sleep(0)
    return samples


async def create_tenant(admin_url: str) -> None:
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(
            "INSERT INTO app.tenants (tenant_id, display_name, plan_id) VALUES ($1, $1, 'pro') "
            "ON CONFLICT DO NOTHING",
            TENANT,
        )
    finally:
        await connection.close()


def request_of(i: int) -> tuple[str, dict[str, object]]:
    query = QUERIES[i % len(QUERIES)]
    return query, ({"json_schema": SCHEMA} if "JSON" in query else {})


async def bench(platform: Platform, args: argparse.Namespace) -> list[tuple[str, Summary]]:
    await create_tenant(platform.admin_database_url)
    infra = InfraSettings(database_url=platform.database_url, redis_url=platform.redis_url)
    settings = RouterSettings(infra=infra, require_deadline=True)
    telemetry = Telemetry("router-bench")
    app = build(settings, telemetry)
    await app.start()
    bare = Router(app.registry, app.router.tenants, None, app.router.metrics, app.router.config)
    service = await start_server(settings, app.register, app.service_names, telemetry)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{service.port}")
    stub = pb_grpc.RouterServiceStub(channel)
    metadata = ((context.TENANT_KEY, TENANT),)
    preference = tier_pb2.BALANCED

    async def no_io(i: int) -> object:
        query, ctx = request_of(i)
        return await bare.decide(TENANT, query, ctx, preference)

    async def served(i: int) -> object:
        query, ctx = request_of(i)
        return await app.router.decide(TENANT, query, ctx, preference)

    requests = []
    for i in range(len(QUERIES)):
        query, ctx = request_of(i)
        request = pb.DecideRequest(query=query, tenant_id=TENANT, tier_preference=preference)
        json_format.ParseDict(ctx, request.context)
        requests.append(request)

    async def over_grpc(i: int) -> pb.DecideResponse:
        return await stub.Decide(requests[i % len(requests)], timeout=5, metadata=metadata)

    results = []
    try:
        gc.collect()
        gc.freeze()  # the long-lived heap is not rescanned by every collection while measuring
        for name, call in (
            ("in process, no state I/O", no_io),
            ("in process, as served", served),
            ("gRPC, client in this process", over_grpc),
        ):
            results.append((name, summarize(await measure(call, args.requests, args.warmup))))
        blobs = [request.SerializeToString().hex() for request in requests]
        client = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CLIENT,
            str(service.port),
            str(args.requests),
            str(args.warmup),
            *blobs,
            stdout=asyncio.subprocess.PIPE,
        )
        output, _ = await client.communicate()
        results.append(("gRPC, client in another process", summarize(json.loads(output))))
        gc.unfreeze()
        reply = await over_grpc(0)
        tier = tier_pb2.Tier.Name(reply.tier)
        print(f"sanity  : {QUERIES[0]!r} → {tier} ({reply.policy_version})")
    finally:
        await channel.close()
        await service.stop()
        await app.stop()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    print("router latency: Router.decide in process and RouterService.Decide over gRPC")
    print(f"requests: {args.requests} measured + {args.warmup} warm-up per path, sequential")
    with tempfile.TemporaryDirectory(prefix="router-bench-") as state:
        platform = Platform(state_dir=Path(state), fast=True)
        print(
            "stack   : starting PostgreSQL, Valkey, NATS (free ports) and migrating …", flush=True
        )
        try:
            platform.start_infra()
            platform.migrate()
            results = asyncio.run(bench(platform, args))
        finally:
            platform.stop()
    print()
    rows: list[list[Cell]] = [[name, s.p50, s.p90, s.p99, s.mean, s.max] for name, s in results]
    print_table(["path (ms)", "p50", "p90", "p99", "mean", "max"], rows)
    print("\nRatios and goals")
    for name, summary in results:
        goal = GOALS_MS.get(name)
        if goal is None:
            print(f"  {name:28s} p99 {summary.p99:.3f} ms  (no goal)")
            continue
        verdict = "met" if summary.p99 < goal else "NOT met"
        print(
            f"  {name:28s} p99 {summary.p99:.3f} ms = {summary.p99 / goal:.0%} of the "
            f"{goal:g} ms goal ({verdict})"
        )
    served = dict(results)
    extra = served["in process, as served"].p50 - served["in process, no state I/O"].p50
    wire = served["gRPC, client in another process"].p50 - served["in process, as served"].p50
    print(f"  state (caches, write-behind) adds ~{extra:.3f} ms at p50; gRPC adds ~{wire:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
