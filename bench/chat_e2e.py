"""POST /v1/chat/message through the Envoy edge, end to end, with the embedded responder.

It starts the platform (fast mode, free ports, a temporary state directory), creates a
tenant on the ``bench`` plan with a ``chat:write`` key, places one order, then asks about
it: every request runs the tracking workflow (router decision, the ``orders.get`` tool,
the embedded model, the factuality gate, outbox events, run rows under RLS). Phase 1 sends
``--requests`` one at a time; phase 2 keeps 32 in flight. The orchestration overhead is the
client-observed latency minus the model steps' time (read back with GetRun). It prints
figures against the goals, not a verdict. Run it as ``.venv/bin/python bench/chat_e2e.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stats import percentile, print_table
from bench.edge_auth import BENCH_PLAN
from services.kit import operator
from services.kit.devstack import Platform

SCOPES = ["chat:write", "runs:read"]
GOALS = {"p50 c=32": 50.0, "p95 c=32": 150.0, "overhead p50": 15.0}
ORDER = {
    "intent": "order", "email": "bench@example.com", "currency": "USD",
    "payment_method": "tok_visa", "items": [{"sku": "mug", "quantity": 1, "unit_price_cents": 900}],
}  # fmt: skip


async def provision(platform: Platform) -> tuple[str, str]:
    """A tenant on the bench plan and its key."""
    connection = await asyncpg.connect(platform.admin_database_url)
    try:
        await connection.execute(BENCH_PLAN)
    finally:
        await connection.close()
    edge = operator.Edge(platform.edge_url.removeprefix("http://"), platform.platform_admin_key)
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    await operator.create_tenant(edge, tenant, "bench", "Chat bench")
    _, secret = await operator.create_key(edge, tenant, SCOPES, 100_000_000, "chat bench")
    return tenant, secret


async def chat(
    http: aiohttp.ClientSession, tenant: str, context: dict[str, Any]
) -> tuple[float, str]:
    """One chat message: (client latency in ms, run id)."""
    body = {"message": "Where is my order?", "tenant_id": tenant, "user_id": "u-bench",
            "context": context}  # fmt: skip
    began = time.perf_counter()
    async with http.post("/v1/chat/message", json=body) as response:
        found = await response.json()
        if response.status != 200 or found.get("status") != "RUN_STATUS_SUCCEEDED":
            raise RuntimeError(f"chat failed: {response.status} {found}")
    return (time.perf_counter() - began) * 1000, str(found["runId"])


async def model_ms(http: aiohttp.ClientSession, tenant: str, run_id: str) -> float:
    """Time the run spent in model steps (llm steps and model-scored gates)."""
    async with http.get(f"/v1/tenants/{tenant}/runs/{run_id}") as response:
        run = (await response.json())["run"]
    return sum(
        float(step["latency"].rstrip("s")) * 1000 for step in run["steps"] if step["type"] == "llm"
    )


async def phase(
    http: aiohttp.ClientSession, tenant: str, context: dict[str, Any], total: int, workers: int
) -> list[tuple[float, str]]:
    """``total`` messages with ``workers`` in flight."""
    results: list[tuple[float, str]] = []
    left = iter(range(total))

    async def worker() -> None:
        for _ in left:
            results.append(await chat(http, tenant, context))

    await asyncio.gather(*(worker() for _ in range(workers)))
    return results


def row(name: str, samples: Sequence[float]) -> list[Any]:
    """p50 and p95 of ``samples`` (ms)."""
    ordered = sorted(samples)
    return [name, len(ordered), percentile(ordered, 0.5), percentile(ordered, 0.95)]


async def bench(platform: Platform, requests: int) -> None:
    """Warm up, then measure concurrency 1 and 32."""
    tenant, secret = await provision(platform)
    headers = {"x-api-key": secret}
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(
        platform.edge_url, headers=headers, connector=connector
    ) as http:
        body = {"message": "I want a mug", "tenant_id": tenant, "user_id": "u-bench",
                "context": ORDER}  # fmt: skip
        async with http.post("/v1/chat/message", json=body) as response:
            placed = await response.json()
        async with http.get(f"/v1/tenants/{tenant}/runs/{placed['runId']}") as response:
            order_id = (await response.json())["run"]["output"]["order_id"]
        context = {"order_id": order_id}
        await phase(http, tenant, context, 40, 4)  # warm-up
        one = await phase(http, tenant, context, requests, 1)
        many = await phase(http, tenant, context, requests * 2, 32)
        models = [await model_ms(http, tenant, run_id) for _, run_id in one]
    overhead = [latency - spent for (latency, _), spent in zip(one, models, strict=True)]
    print("POST /v1/chat/message (tracking workflow, embedded responder), ms:")
    print_table(
        ["series", "n", "p50", "p95"],
        [
            row("c=1 end to end", [latency for latency, _ in one]),
            row("c=32 end to end", [latency for latency, _ in many]),
            row("c=1 model steps", models),
            row("c=1 orchestration overhead", overhead),
        ],
        digits=1,
    )
    ordered = sorted(latency for latency, _ in many)
    figures = {
        "p50 c=32": percentile(ordered, 0.5),
        "p95 c=32": percentile(ordered, 0.95),
        "overhead p50": percentile(sorted(overhead), 0.5),
    }
    for name, goal in GOALS.items():
        print(f"  {name}: {figures[name]:.1f} ms (goal ≤ {goal:.0f} ms)")


def main(argv: Sequence[str] | None = None) -> int:
    """Start the platform, run the benchmark, stop the platform."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200, help="messages in phase 1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="chat-bench-") as state:
        platform = Platform(state_dir=Path(state), fast=True)
        platform.start()
        try:
            asyncio.run(bench(platform, args.requests))
        finally:
            platform.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
