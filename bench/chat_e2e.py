"""POST /v1/chat/message through the Envoy edge, end to end, with the embedded responder.

It starts the platform (fast mode, free ports, a temporary state directory), creates a
tenant on the ``bench`` plan with a ``chat:write`` key, places one order, then asks about
it: every request runs the tracking workflow (router decision, the ``orders.get`` tool,
the embedded model, the factuality gate, outbox events, run rows under RLS). Phase 1 sends
``--requests`` one at a time; phase 2 keeps 32 in flight.

Where the time goes, per request:

- **model**: the run's llm steps (read back with GetRun);
- **orchestration**: the orchestrator's own answer time (``latencyMs`` of the reply) minus
  the model's;
- **edge**: what the client saw minus the orchestrator's answer time (Envoy, ext_authz,
  transcoding, the network);
- **overhead** (the issue's figure): everything but the model, i.e. client latency − model.

With 32 in flight on a small machine the latency is set by throughput, so phase 2 also
reports the CPU each process of the platform spent per request (psutil, user + system).

``--save FILE`` writes the figures as JSON; ``--baseline FILE`` prints them side by side
with a saved run (``bench/data/chat_e2e_baseline.json`` holds one taken before the engine's
checkpointing was batched). It prints figures against the goals, not a verdict.
Run it as ``.venv/bin/python bench/chat_e2e.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._stats import percentile, print_table
from bench.edge_auth import BENCH_PLAN
from services.kit import operator
from services.kit.devstack import Platform

SCOPES = ["chat:write", "runs:read", "knowledge:read"]
GOALS = {"c=32 end to end p50": 50.0, "c=32 end to end p95": 150.0, "c=1 overhead p50": 15.0}
BASELINE = Path(__file__).resolve().parent / "data" / "chat_e2e_baseline.json"
WORKERS = 32
ORDER = {
    "intent": "order", "email": "bench@example.com", "currency": "USD",
    "payment_method": "tok_visa", "items": [{"sku": "mug", "quantity": 1, "unit_price_cents": 900}],
}  # fmt: skip


@dataclass(frozen=True)
class Sample:
    """One answered message: what the client saw and what the orchestrator says it took."""

    client_ms: float
    server_ms: float
    run_id: str


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


async def chat(http: aiohttp.ClientSession, tenant: str, context: dict[str, Any]) -> Sample:
    """One chat message."""
    body = {"message": "Where is my order?", "tenant_id": tenant, "user_id": "u-bench",
            "context": context}  # fmt: skip
    began = time.perf_counter()
    async with http.post("/v1/chat/message", json=body) as response:
        found = await response.json()
        if response.status != 200 or found.get("status") != "RUN_STATUS_SUCCEEDED":
            raise RuntimeError(f"chat failed: {response.status} {found}")
    client_ms = (time.perf_counter() - began) * 1000
    return Sample(client_ms, float(found.get("latencyMs", 0)), str(found["runId"]))


async def model_ms(http: aiohttp.ClientSession, tenant: str, run_id: str) -> float:
    """Time the run spent in model steps."""
    async with http.get(f"/v1/tenants/{tenant}/runs/{run_id}") as response:
        run = (await response.json())["run"]
    return sum(
        float(step["latency"].rstrip("s")) * 1000 for step in run["steps"] if step["type"] == "llm"
    )


async def phase(
    http: aiohttp.ClientSession, tenant: str, context: dict[str, Any], total: int, workers: int
) -> tuple[list[Sample], float]:
    """``total`` messages with ``workers`` in flight; the samples and the wall time (s)."""
    results: list[Sample] = []
    left = iter(range(total))

    async def worker() -> None:
        for _ in left:
            results.append(await chat(http, tenant, context))

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return results, time.perf_counter() - began


def component(process: psutil.Process) -> str:
    """The platform part a process belongs to, by its command line or executable."""
    if process.pid == os.getpid():
        return "bench client"
    words: list[str] = []
    for read in (process.cmdline, process.name, process.exe):
        try:
            found = read()
        except psutil.Error:
            continue
        words.extend(found if isinstance(found, list) else [found])
    if "python" in Path(words[0] if words else "").name and "-m" in words[:-2]:
        part = words[words.index("-m") + 1].removeprefix("services.").removeprefix("tests.")
        return "dlq forwarder" if part == "dataplane" else part
    text = " ".join(words)
    for known in ("postgres", "envoy", "valkey", "nats"):
        if known in text:
            return known
    named = Path(words[-1]).name if words else ""
    return named if named and not named.isdigit() else "unidentified"


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) so far of this process and every descendant, by pid."""
    me = psutil.Process()
    found: dict[int, tuple[str, float]] = {}
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        found[process.pid] = (component(process), times.user + times.system)
    return found


def cpu_per_request(
    before: Mapping[int, tuple[str, float]], after: Mapping[int, tuple[str, float]], count: int
) -> dict[str, float]:
    """CPU ms per request by component between two :func:`cpu_seconds` readings."""
    spent: dict[str, float] = {}
    for pid, (name, seconds) in after.items():
        start = before.get(pid, (name, 0.0))[1]
        spent[name] = spent.get(name, 0.0) + (seconds - start) * 1000 / count
    return dict(sorted(spent.items(), key=lambda item: -item[1]))


async def settle(quiet_ms: float = 60.0, window_s: float = 1.0, limit_s: float = 120.0) -> float:
    """Wait until the platform is idle again; returns the seconds waited.

    Work an answer causes goes on after its reply: the outbox relay publishes its events,
    the router reads its outcome. After a burst that work runs for seconds, so a phase that
    starts at once measures the burst's tail as well as its own load. Idle means the
    platform's processes together spent under ``quiet_ms`` CPU ms in ``window_s`` (idle
    heartbeats and polls come to about 25 ms a second); ``limit_s`` caps the wait.
    """
    began = time.perf_counter()
    while time.perf_counter() - began < limit_s:
        before = cpu_seconds()
        await asyncio.sleep(window_s)
        spent = cpu_per_request(before, cpu_seconds(), 1)
        spent.pop("bench client", None)
        if sum(spent.values()) < quiet_ms * window_s:
            break
    return time.perf_counter() - began


def quantiles(samples: Sequence[float]) -> dict[str, float]:
    """p50 and p95 of ``samples``."""
    ordered = sorted(samples)
    return {"p50": percentile(ordered, 50), "p95": percentile(ordered, 95)}


def split(samples: Sequence[Sample], model: Sequence[float]) -> dict[str, list[float]]:
    """Per-request series: end to end, edge, orchestration, model, overhead."""
    return {
        "end to end": [s.client_ms for s in samples],
        "edge": [s.client_ms - s.server_ms for s in samples],
        "orchestration": [s.server_ms - m for s, m in zip(samples, model, strict=True)],
        "model": list(model),
        "overhead": [s.client_ms - m for s, m in zip(samples, model, strict=True)],
    }


async def tracking_context(http: aiohttp.ClientSession, tenant: str) -> dict[str, Any]:
    """Place one order through the edge (the platform warmed up); the context to ask about it."""
    body = {"message": "I want a mug", "tenant_id": tenant, "user_id": "u-bench",
            "context": ORDER}  # fmt: skip
    async with http.post("/v1/chat/message", json=body) as response:
        placed = await response.json()
    async with http.get(f"/v1/tenants/{tenant}/runs/{placed['runId']}") as response:
        order_id = (await response.json())["run"]["output"]["order_id"]
    # The knowledge service loads its model in the background after it starts; a search
    # waits for it, so that load is not measured as part of the first phase.
    search = {"query": "warm up"}
    async with http.post(f"/v1/tenants/{tenant}/documents:search", json=search) as response:
        if response.status != 200:
            raise RuntimeError(f"warm-up search failed: {response.status}")
    return {"order_id": order_id}


async def bench(platform: Platform, requests: int) -> dict[str, Any]:
    """Warm up, then measure concurrency 1 and 32; the figures."""
    tenant, secret = await provision(platform)
    headers = {"x-api-key": secret}
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(
        platform.edge_url, headers=headers, connector=connector
    ) as http:
        context = await tracking_context(http, tenant)
        await phase(http, tenant, context, 40, 4)  # warm-up
        one, _ = await phase(http, tenant, context, requests, 1)
        await asyncio.sleep(1.0)  # let the outbox relay and recovery loop settle
        before = cpu_seconds()
        many, wall_s = await phase(http, tenant, context, requests * 2, WORKERS)
        after = cpu_seconds()
        models_one = [await model_ms(http, tenant, s.run_id) for s in one]
        models_many = [await model_ms(http, tenant, s.run_id) for s in many]
    series: dict[str, dict[str, float]] = {}
    for label, samples, models in (("c=1", one, models_one), (f"c={WORKERS}", many, models_many)):
        for part, values in split(samples, models).items():
            series[f"{label} {part}"] = quantiles(values)
    return {
        "requests": {"c=1": len(one), f"c={WORKERS}": len(many)},
        "series": series,
        "throughput_rps": len(many) / wall_s,
        "cpu_ms_per_request": cpu_per_request(before, after, len(many)),
    }


def report(figures: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> None:
    """Print the figures, side by side with ``baseline`` when given."""
    print("POST /v1/chat/message (tracking workflow, embedded responder), ms:")
    old = baseline or {}
    if "taken_with" in old:
        print(f"  before: {old['taken_with']}")

    def compare(now: float, then: float | None) -> list[Any]:
        if baseline is None:
            return [now]
        if then is None:
            return ["-", now, "-"]
        return [then, now, f"{now / then:.2f}x" if then else "-"]

    headers = ["series", "p50", "p95"]
    if baseline is not None:
        headers = ["series", "p50 before", "p50 now", "ratio", "p95 before", "p95 now", "ratio"]
    rows: list[list[Any]] = []
    for name, values in figures["series"].items():
        was = old.get("series", {}).get(name, {})
        rows.append(
            [name, *compare(values["p50"], was.get("p50")), *compare(values["p95"], was.get("p95"))]
        )
    print_table(headers, rows, digits=1)
    print(f"\nc={WORKERS}: CPU ms per request by process (user + system), 2 cores shared:")
    cpu_rows: list[list[Any]] = []
    old_cpu = old.get("cpu_ms_per_request", {})
    names = list(figures["cpu_ms_per_request"]) + [
        n for n in old_cpu if n not in figures["cpu_ms_per_request"]
    ]
    for name in names:
        now = figures["cpu_ms_per_request"].get(name, 0.0)
        cpu_rows.append([name, *compare(now, old_cpu.get(name))])
    total = sum(figures["cpu_ms_per_request"].values())
    cpu_rows.append(["total", *compare(total, sum(old_cpu.values()) if old_cpu else None)])
    cpu_headers = ["process", "ms/request"]
    if baseline is not None:
        cpu_headers = ["process", "before", "now", "ratio"]
    print_table(cpu_headers, cpu_rows, digits=2)
    throughput = figures["throughput_rps"]
    was_rps = old.get("throughput_rps")
    print(
        f"\nc={WORKERS} throughput: {throughput:.0f} requests/s"
        + (f" (before: {was_rps:.0f})" if was_rps else "")
    )
    series = figures["series"]
    got = {
        "c=32 end to end p50": series[f"c={WORKERS} end to end"]["p50"],
        "c=32 end to end p95": series[f"c={WORKERS} end to end"]["p95"],
        "c=1 overhead p50": series["c=1 overhead"]["p50"],
    }
    for name, goal in GOALS.items():
        print(f"  {name}: {got[name]:.1f} ms (goal ≤ {goal:.0f} ms)")


def main(argv: Sequence[str] | None = None) -> int:
    """Start the platform, run the benchmark, stop the platform."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200, help="messages in phase 1")
    parser.add_argument("--save", type=Path, help="write the figures to this JSON file")
    parser.add_argument(
        "--baseline", type=Path, default=BASELINE, help="JSON figures to compare with"
    )
    parser.add_argument("--no-baseline", action="store_true", help="print no comparison")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="chat-bench-") as state:
        platform = Platform(state_dir=Path(state), fast=True)
        platform.start()
        try:
            figures = asyncio.run(bench(platform, args.requests))
        finally:
            platform.stop()
    baseline = None
    if not args.no_baseline and args.baseline.exists():
        baseline = json.loads(args.baseline.read_text())
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(figures, indent=2) + "\n")
    report(figures, baseline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
